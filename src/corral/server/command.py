"""``corral server`` and ``corral start``: run the server process."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from corral.config import ServerSettings, load_settings

DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Where corral keeps its state. [env: CORRAL_DATA_DIR]"),
]
HostOpt = Annotated[str | None, typer.Option(help="Address to listen on. [env: CORRAL_HOST]")]
PortOpt = Annotated[
    int | None, typer.Option(help="Port to listen on (default 7321). [env: CORRAL_PORT]")
]
DbOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="sqlite:///PATH or postgresql://USER@HOST/DB (default: SQLite in the data dir). "
        "[env: CORRAL_DATABASE_URL]",
    ),
]
PasswordOpt = Annotated[
    str | None,
    typer.Option(
        "--bootstrap-password",
        help="Password of the first admin (default: generated). [env: CORRAL_BOOTSTRAP_PASSWORD]",
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--cluster-token",
        help="Token workers register with (default: generated into the data dir). "
        "[env: CORRAL_CLUSTER_TOKEN]",
    ),
]
LogOpt = Annotated[str | None, typer.Option("--log-level", help="[env: CORRAL_LOG_LEVEL]")]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="TOML file with settings; flags and env win.")
]


def _settings(flags: dict[str, Any], config: Path | None) -> ServerSettings:
    try:
        return load_settings(ServerSettings, flags, config)
    except (ValidationError, ValueError) as e:
        typer.echo(f"corral: invalid settings: {e}", err=True)
        raise typer.Exit(2) from e


def server_flags(
    *,
    data_dir: Path | None,
    host: str | None,
    port: int | None,
    database_url: str | None,
    bootstrap_password: str | None,
    cluster_token: str | None,
    log_level: str | None,
) -> dict[str, Any]:
    return {
        "data_dir": data_dir,
        "host": host,
        "port": port,
        "database_url": database_url,
        "bootstrap_password": bootstrap_password,
        "cluster_token": cluster_token,
        "log_level": log_level,
    }


def server_settings(flags: dict[str, Any], config: Path | None) -> ServerSettings:
    return _settings(flags, config)


def server(
    data_dir: DataDirOpt = None,
    host: HostOpt = None,
    port: PortOpt = None,
    database_url: DbOpt = None,
    bootstrap_password: PasswordOpt = None,
    cluster_token: TokenOpt = None,
    log_level: LogOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Run the server only: API, database, scheduler. Workers join it with the cluster token."""
    flags = server_flags(
        data_dir=data_dir,
        host=host,
        port=port,
        database_url=database_url,
        bootstrap_password=bootstrap_password,
        cluster_token=cluster_token,
        log_level=log_level,
    )
    settings = _settings(flags, config)
    # Imported here, not at the top: the server's dependencies take a second
    # to import, and every client command (`corral models list`) would pay it.
    from corral.server.runner import run_server

    run_server(settings)


def register(app: typer.Typer) -> None:
    app.command("server")(server)
