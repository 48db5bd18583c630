"""REST API ``/api/v1``: JSON in and out, RFC 9457 problem documents, OpenAPI document."""
