"""The corral server: database, management API, controllers, gateway."""
