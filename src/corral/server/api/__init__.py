"""The management API under ``/api/v1``: thin routers over the services."""
