"""The web process: app factory, extensions, errors, security, and the REST API (`api/`)."""
