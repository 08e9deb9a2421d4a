"""The worker agent: reports this machine, fetches model files, runs and
supervises inference servers for the instances the server assigns to it.

Talks to the server over HTTP only; never imports ``corral.server``.
"""
