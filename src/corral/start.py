"""``corral start``: the server and a worker on this machine, in one process.

The only module besides the entry point that sees both sides: it runs the
worker agent next to the server (as the server's companion, so both stop
together) and still lets them talk over HTTP only, like any other worker.
"""

from __future__ import annotations

from typing import Annotated

import typer

from corral.config import ServerSettings
from corral.errors import CorralError
from corral.server.command import (
    ConfigOpt,
    DataDirOpt,
    DbOpt,
    HostOpt,
    LogOpt,
    PasswordOpt,
    PortOpt,
    TokenOpt,
    server_flags,
    server_settings,
)
from corral.worker.command import (
    AdvertiseOpt,
    DevicesFileOpt,
    LabelOpt,
    worker_flags,
    worker_settings,
)

DEMO_MODEL = "demo"


def _demo_banner(settings: ServerSettings) -> str:
    """The chat example for the demo model, in the banner's pasteable block."""
    url = settings.local_url()
    body = (
        f'{{"model": "{DEMO_MODEL}", "messages": [{{"role": "user", "content": "Hello"}}], '
        '"max_tokens": 16}'
    )
    return "\n".join(
        [
            "",
            f"  # Chat with the demo model {DEMO_MODEL!r} (tiny, random weights: it answers",
            "  # nonsense, quickly) once it runs, a few seconds after the start:",
            f'  curl -s {url}/v1/chat/completions -H "Authorization: Bearer $TOKEN" \\',
            f"    -H 'content-type: application/json' -d '{body}'",
        ]
    )


def start(
    data_dir: DataDirOpt = None,
    host: HostOpt = None,
    port: PortOpt = None,
    database_url: DbOpt = None,
    bootstrap_password: PasswordOpt = None,
    cluster_token: TokenOpt = None,
    log_level: LogOpt = None,
    config: ConfigOpt = None,
    worker: Annotated[
        bool, typer.Option("--worker/--no-worker", help="Also run a worker on this machine.")
    ] = True,
    worker_name: Annotated[
        str | None, typer.Option("--worker-name", help="Name of this machine's worker.")
    ] = None,
    advertise_address: AdvertiseOpt = None,
    label: LabelOpt = None,
    devices_file: DevicesFileOpt = None,
    demo: Annotated[
        bool,
        typer.Option(
            "--demo", help=f"Also deploy a tiny demo model ({DEMO_MODEL!r}); no download needed."
        ),
    ] = False,
) -> None:
    """Run corral on this machine: the server and a worker that runs models here."""
    settings = server_settings(
        server_flags(
            data_dir=data_dir,
            host=host,
            port=port,
            database_url=database_url,
            bootstrap_password=bootstrap_password,
            cluster_token=cluster_token,
            log_level=log_level,
        ),
        config,
    )
    # Imported here: the server's and the worker's dependencies take seconds
    # to import, and every client command (`corral models list`) would pay it.
    from corral.embedded import embedded_worker
    from corral.server.runner import run_server
    from corral.worker.devices import load_devices_file

    if demo and not worker:
        typer.echo("corral: --demo needs the worker (drop --no-worker)", err=True)
        raise typer.Exit(2)
    companion = None
    if worker:
        flags = worker_flags(
            name=worker_name,
            advertise_address=advertise_address,
            labels=label,
            devices_file=devices_file,
        )
        # Fail before the server starts, not after: a bad devices file is a typo.
        worker_settings({"server_url": settings.local_url(), **flags}, None)
        if devices_file is not None:
            try:
                load_devices_file(devices_file)
            except CorralError as e:
                typer.echo(f"corral: {e.message}", err=True)
                raise typer.Exit(2) from e
        companion = embedded_worker(settings, flags, demo=DEMO_MODEL if demo else None)
    run_server(settings, companion, _demo_banner(settings) if demo else "")


def register(app: typer.Typer) -> None:
    app.command("start")(start)
