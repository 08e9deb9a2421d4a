"""``corral server`` and ``corral start``: run the server process."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn
from pydantic import ValidationError

from corral.config import ServerSettings, load_settings
from corral.logging import configure_logging
from corral.server import datadir
from corral.server.app import create_app
from corral.server.services.users import ADMIN_USERNAME, BootstrapResult

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


class _Server(uvicorn.Server):
    """uvicorn's server, telling us once it listens."""

    def __init__(self, config: uvicorn.Config, on_listening: Any) -> None:
        super().__init__(config)
        self._on_listening = on_listening

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._on_listening()


def _settings(flags: dict[str, Any], config: Path | None) -> ServerSettings:
    try:
        return load_settings(ServerSettings, flags, config)
    except (ValidationError, ValueError) as e:
        typer.echo(f"corral: invalid settings: {e}", err=True)
        raise typer.Exit(2) from e


def _banner(settings: ServerSettings, result: BootstrapResult) -> str:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    url = f"http://{host}:{settings.port}"
    lines = [f"corral is ready at {url}  (API docs: {url}/docs)"]
    if result.created and result.password is not None:
        generated = settings.bootstrap_password is None
        lines.append(f"Admin user: {ADMIN_USERNAME}")
        if generated:
            path = settings.data_dir / datadir.INITIAL_PASSWORD_FILE
            lines.append(f"Admin password: {result.password}  (also in {path}; change it)")
        else:
            lines.append("Admin password: the one given with --bootstrap-password")
        password = result.password if generated else "<password>"
    else:
        password = "<password>"
    lines += [
        "Try it:",
        f"  TOKEN=$(curl -s {url}/api/v1/auth/login -H 'content-type: application/json' \\",
        f'    -d \'{{"username": "{ADMIN_USERNAME}", "password": "{password}"}}\' \\',
        "    | python3 -c 'import json, sys; print(json.load(sys.stdin)[\"token\"])')",
        f'  curl -s {url}/api/v1/models -H "Authorization: Bearer $TOKEN"',
    ]
    return "\n".join(lines)


def run_server(settings: ServerSettings) -> None:
    configure_logging(settings.log_level)
    outcome: list[BootstrapResult] = []
    app = create_app(settings, on_startup=outcome.append)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        log_level=settings.log_level,
        access_log=settings.log_level == "debug",
        server_header=False,
    )
    server = _Server(config, lambda: print(_banner(settings, outcome[0]), flush=True))
    server.run()
    if not server.started:
        typer.echo("corral: the server did not start; see the log above", err=True)
        sys.exit(1)


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
    flags = {
        "data_dir": data_dir,
        "host": host,
        "port": port,
        "database_url": database_url,
        "bootstrap_password": bootstrap_password,
        "cluster_token": cluster_token,
        "log_level": log_level,
    }
    run_server(_settings(flags, config))


def start(
    data_dir: DataDirOpt = None,
    host: HostOpt = None,
    port: PortOpt = None,
    database_url: DbOpt = None,
    bootstrap_password: PasswordOpt = None,
    cluster_token: TokenOpt = None,
    log_level: LogOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Run corral on this machine: the server (and, once workers exist, an embedded worker)."""
    server(data_dir, host, port, database_url, bootstrap_password, cluster_token, log_level, config)


def register(app: typer.Typer) -> None:
    app.command("server")(server)
    app.command("start")(start)
