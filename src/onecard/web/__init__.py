"""Flask application: REST API (``/api/v1``), operations endpoints and the console."""
