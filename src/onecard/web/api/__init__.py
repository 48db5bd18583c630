"""REST API ``/api/v1``: JSON in and out, problem documents for errors, OpenAPI at ``openapi.json``."""
