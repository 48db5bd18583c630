"""Every test here works inside a fresh tenant of its own."""

import pytest


@pytest.fixture(autouse=True)
def _in_a_fresh_tenant(tenant):
    """Put a fresh tenant in scope before any factory runs."""
    return tenant
