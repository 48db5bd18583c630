"""Operators, roles, permissions, data scopes, login and API tokens."""
