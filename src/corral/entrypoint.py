"""The ``corral`` command: the only module that sees server and CLI together."""

from __future__ import annotations

import typer

from corral import __version__, estimate_command, start
from corral.backends import command as backend_command
from corral.cli import app as cli_app
from corral.cli.client import CliError
from corral.server import command as server_command
from corral.worker import command as worker_command

app = typer.Typer(
    name="corral",
    help="Run large language models on a cluster of your own machines.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"corral {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True),
) -> None:
    """Run large language models on a cluster of your own machines."""


server_command.register(app)
start.register(app)
worker_command.register(app)
cli_app.register(app)
backend_command.register(app)
estimate_command.register(app)


def main() -> None:
    try:
        app()
    except CliError as e:
        typer.echo(f"corral: {e.message}", err=True)
        raise SystemExit(1) from None
