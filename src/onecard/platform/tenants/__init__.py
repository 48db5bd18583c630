"""Tenants (organisations), their sites (each with an IANA zone) and org-unit trees."""
