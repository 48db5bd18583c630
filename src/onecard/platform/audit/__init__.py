"""Append-only, per-tenant hash-chained audit of business actions."""
