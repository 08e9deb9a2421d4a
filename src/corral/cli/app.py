"""The client commands of ``corral``, grouped as they appear in ``--help``."""

from __future__ import annotations

import typer

from corral.cli.cluster import keys_app, users_app, workers_app
from corral.cli.instances import instances_app
from corral.cli.models import models_app
from corral.cli.session import login, logout
from corral.cli.usage import usage


def register(app: typer.Typer) -> None:
    app.command("login")(login)
    app.command("logout")(logout)
    app.add_typer(models_app, name="models")
    app.add_typer(instances_app, name="instances")
    app.add_typer(workers_app, name="workers")
    app.add_typer(keys_app, name="keys")
    app.add_typer(users_app, name="users")
    app.command("usage")(usage)
