"""``corral worker``: join a cluster and run what its server assigns here."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from corral.config import WorkerSettings, load_settings
from corral.errors import InvalidInputError
from corral.logging import configure_logging

ServerUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--server-url",
        help="The corral server, e.g. http://10.0.0.1:7321. [env: CORRAL_WORKER_SERVER_URL]",
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token",
        help="The cluster token (the server's data dir has it in `cluster_token`); needed "
        "the first time only. [env: CORRAL_WORKER_TOKEN]",
    ),
]
NameOpt = Annotated[
    str | None,
    typer.Option("--name", help="Worker name (default: host name). [env: CORRAL_WORKER_NAME]"),
]
WorkerPortOpt = Annotated[
    int | None,
    typer.Option("--port", help="Port of the worker's own API (default 7322; 0 = any free port)."),
]
AdvertiseOpt = Annotated[
    str | None,
    typer.Option(
        "--advertise-address",
        help="Address the server reaches this worker and its engines at "
        "(default: this machine's address on its route to the server).",
    ),
]
LabelOpt = Annotated[
    list[str] | None, typer.Option("--label", help="A label k=v for worker selectors; repeatable.")
]
DevicesFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--devices-file",
        help="YAML declaring SIMULATED GPUs (development, demos, tests); replaces detection.",
    ),
]


def worker_flags(
    *,
    name: str | None,
    advertise_address: str | None,
    labels: list[str] | None,
    devices_file: Path | None,
) -> dict[str, Any]:
    """The worker settings given on the command line (shared with ``corral start``)."""
    from corral.worker.devices.labels import parse_label  # light, but its package is not

    try:
        parsed = dict(parse_label(text) for text in labels or [])
    except InvalidInputError as e:
        typer.echo(f"corral: {e.message}", err=True)
        raise typer.Exit(2) from e
    return {
        "name": name,
        "advertise_address": advertise_address,
        "labels": parsed or None,
        "devices_file": devices_file,
    }


def worker_settings(flags: dict[str, Any], config: Path | None) -> WorkerSettings:
    try:
        return load_settings(WorkerSettings, flags, config)
    except (ValidationError, ValueError) as e:
        typer.echo(f"corral: invalid worker settings: {e}", err=True)
        raise typer.Exit(2) from e


def run_worker(settings: WorkerSettings) -> None:
    """Run the agent in this process until SIGINT/SIGTERM."""
    configure_logging(settings.log_level)
    # Imported here: the agent's dependencies take a second to import, and
    # every client command (`corral models list`) would pay it.
    from corral.worker.agent import Agent

    async def main() -> None:
        agent = Agent(settings)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, agent.shutdown)
        await agent.run()

    try:
        asyncio.run(main())
    except InvalidInputError as e:
        typer.echo(f"corral: {e.message}", err=True)
        raise SystemExit(1) from None


def worker(
    server_url: ServerUrlOpt = None,
    token: TokenOpt = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir", help="The worker's own state (default ~/.local/share/corral/worker)."
        ),
    ] = None,
    name: NameOpt = None,
    host: Annotated[
        str | None, typer.Option("--host", help="Where the worker's API listens.")
    ] = None,
    port: WorkerPortOpt = None,
    advertise_address: AdvertiseOpt = None,
    label: LabelOpt = None,
    devices_file: DevicesFileOpt = None,
    cluster_network: Annotated[
        str | None,
        typer.Option(
            "--cluster-network",
            help="The cluster network (CIDR): rpc-servers for distributed llama.cpp start "
            "only on an address inside it. [env: CORRAL_WORKER_CLUSTER_NETWORK]",
        ),
    ] = None,
    log_level: Annotated[str | None, typer.Option("--log-level")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="TOML settings file.")] = None,
) -> None:
    """Join a corral cluster and run the model instances its server places here."""
    flags = {
        "server_url": server_url,
        "token": token,
        "data_dir": data_dir,
        "host": host,
        "port": port,
        "log_level": log_level,
        "cluster_network": cluster_network,
        **worker_flags(
            name=name, advertise_address=advertise_address, labels=label, devices_file=devices_file
        ),
    }
    run_worker(worker_settings(flags, config))


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)
