"""Background loops of the server: each a component with ``run()`` and
``shutdown()``, its work in a service function (load → decide → apply with
guarded writes), so that two server processes on one database stay correct."""
