"""``corral backend install | list | run``: engines on this machine, no server needed."""

from __future__ import annotations

import json
import secrets
import socket
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from corral.backends.base import Installation, LaunchRequest
from corral.backends.llama_cpp import install as llama_install
from corral.backends.llama_cpp.driver import describe_external, write_manifest
from corral.backends.model_info import context_length as model_context_length
from corral.backends.process import BackendExitedError, BackendProcess
from corral.backends.registry import driver
from corral.backends.steps import InstallError
from corral.backends.vllm import install as vllm_install
from corral.config import default_data_dir
from corral.errors import InvalidModelFile
from corral.schemas.models import Backend

backend_app = typer.Typer(
    help="Install and try inference engines on this machine.", no_args_is_help=True
)

DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="CORRAL_DATA_DIR",
        help="corral's data dir (default ~/.local/share/corral).",
    ),
]


def _progress(message: str) -> None:
    typer.echo(message, err=True)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"corral: {message}", err=True)
    return typer.Exit(1)


def _backend(name: str) -> Backend:
    try:
        return Backend(driver(name).backend)
    except ValueError:
        raise _fail(f"unknown backend {name!r}; use llama.cpp (or llama-box) or vllm") from None


@backend_app.command("install")
def install(
    backend: Annotated[str, typer.Argument(help="llama.cpp (alias llama-box) or vllm.")],
    version: Annotated[str | None, typer.Option(help="Version to pin (default: corral's).")] = None,
    gpu: Annotated[
        str | None,
        typer.Option(help="llama.cpp build: cuda, rocm, metal, vulkan or cpu (default: detected)."),
    ] = None,
    llama_server: Annotated[
        Path | None, typer.Option(help="Use this existing llama-server instead of building one.")
    ] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Install a backend version into the data dir (built once per machine, then cached)."""
    data = data_dir or default_data_dir()
    canonical = _backend(backend)
    try:
        if canonical is Backend.VLLM:
            flavour = vllm_install.detect_flavour()
            path = vllm_install.install(
                data, version or vllm_install.DEFAULT_VERSION, flavour, _progress
            )
        elif llama_server is not None:
            found = describe_external(llama_server.resolve())
            path = data / "backends" / "llama.cpp" / f"external-{found.version}"
            write_manifest(path, found)
        else:
            flavour_name = gpu or llama_install.detect_flavour()
            try:
                flavour = llama_install.Flavour(flavour_name)
            except ValueError:
                raise _fail(
                    f"unknown --gpu {flavour_name!r}; use cuda, rocm, metal, vulkan or cpu"
                ) from None
            built = llama_install.install(
                data, version or llama_install.DEFAULT_VERSION, flavour, _progress
            )
            path = built.path
    except InstallError as e:
        raise _fail(e.message) from None
    typer.echo(str(path))


@backend_app.command("list")
def list_installed(
    data_dir: DataDirOpt = None,
    json_output: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Installed backend versions, their flavour and path."""
    data = data_dir or default_data_dir()
    rows = [i for b in Backend for i in driver(b).installed(data)]
    if json_output:
        typer.echo(json.dumps([_describe(i) for i in rows], indent=2))
        return
    table = Table(
        "BACKEND",
        "VERSION",
        "FLAVOUR",
        "REPORTS",
        "PATH",
        box=None,
        pad_edge=False,
        header_style="bold",
    )
    for i in rows:
        table.add_row(i.backend, i.version, i.flavour, i.reported_version, str(i.path))
    Console().print(table)


def _describe(i: Installation) -> dict[str, str]:
    return {
        "backend": i.backend,
        "version": i.version,
        "flavour": i.flavour,
        "reported_version": i.reported_version,
        "path": str(i.path),
    }


def _pick(backend: Backend, data: Path, version: str | None) -> Installation:
    installed = driver(backend).installed(data)
    matching = [i for i in installed if version is None or i.version == version]
    if not matching:
        wanted = f"{backend} {version}" if version else str(backend)
        raise _fail(f"{wanted} is not installed; run `corral backend install {backend}`")
    return matching[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@backend_app.command(
    "run", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)
def run(
    ctx: typer.Context,
    model: Annotated[Path, typer.Argument(help="A .gguf file or a Hugging Face model directory.")],
    backend: Annotated[str, typer.Option(help="auto, llama.cpp or vllm.")] = "auto",
    version: Annotated[str | None, typer.Option()] = None,
    name: Annotated[str | None, typer.Option(help="Model id to serve it under.")] = None,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="Default: a free port.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait until it is ready.")] = 600,
    data_dir: DataDirOpt = None,
) -> None:
    """Run one backend on a model without a server (extra args after `--` go to the engine)."""
    if not model.exists():
        raise _fail(f"{model} does not exist")
    chosen = (
        Backend(driver(backend).backend)
        if backend != "auto"
        else Backend.LLAMA_CPP
        if model.suffix.lower() == ".gguf"
        else Backend.VLLM
    )
    data = data_dir or default_data_dir()
    installation = _pick(chosen, data, version)
    try:
        context_length = model_context_length(model)
    except InvalidModelFile as e:
        raise _fail(e.message) from None
    request = LaunchRequest(
        model_name=name or model.stem,
        model_path=model.resolve(),
        host=host,
        port=port or _free_port(),
        api_key=secrets.token_urlsafe(24),
        context_length=context_length,
        backend_parameters=tuple(ctx.args),
    )
    log = data / "logs" / f"backend-run-{int(time.time())}.log"
    process = BackendProcess(driver(chosen), installation, request, log)
    shown = [a if a != request.api_key else "***" for a in process.command.argv]
    typer.echo(f"$ {' '.join(shown)}", err=True)
    typer.echo(f"log: {log}", err=True)
    process.start()
    try:
        process.wait_ready(timeout)
        typer.echo(
            f"ready: {process.base_url}/v1  model={request.model_name}  api key={request.api_key}"
        )
        assert process.process is not None
        process.process.wait()
        typer.echo(
            f"{chosen} exited with {process.process.returncode}:\n{process.log_tail()}", err=True
        )
    except (BackendExitedError, TimeoutError) as e:
        raise _fail(str(e)) from None
    except KeyboardInterrupt:
        pass
    finally:
        process.stop()


def register(app: typer.Typer) -> None:
    app.add_typer(backend_app, name="backend")
