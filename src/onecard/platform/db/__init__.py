"""Database plumbing: declarative base, engines, tenant scoping and append-only guards."""
