"""The ``corral`` command's client side: it talks to a server over HTTP only."""
