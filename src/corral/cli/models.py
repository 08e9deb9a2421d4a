"""``corral models …``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from corral.cli.client import Client, CliError, find_model
from corral.cli.instances import instances_table
from corral.cli.output import (
    JsonOpt,
    format_labels,
    print_fields,
    print_json,
    print_table,
)

models_app = typer.Typer(help="Deploy and manage models.", no_args_is_help=True)


def parse_pairs(pairs: list[str], what: str) -> dict[str, str]:
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"{what} must look like KEY=VALUE, got {pair!r}")
        result[key] = value
    return result


def _source(
    hf_repo: str | None,
    hf_file: str | None,
    revision: str | None,
    modelscope: str | None,
    local_path: str | None,
    mmproj: str | None = None,
) -> dict[str, Any]:
    given = [s for s in (hf_repo, modelscope, local_path) if s]
    if len(given) != 1:
        raise CliError("give exactly one source: --hf-repo, --modelscope or --local-path")
    source: dict[str, Any]
    if hf_repo:
        source = {"type": "huggingface", "repo_id": hf_repo, "filename": hf_file}
        if revision:
            source["revision"] = revision
    elif modelscope:
        source = {
            "type": "modelscope",
            "model_id": modelscope,
            "filename": hf_file,
            "revision": revision,
        }
    else:
        source = {"type": "local", "path": str(Path(local_path or "").absolute())}
        mmproj = str(Path(mmproj).absolute()) if mmproj else None
    if mmproj:
        source["mmproj"] = mmproj
    return source


@models_app.command("list")
def list_models(json_output: JsonOpt = False) -> None:
    """List models with their ready and wanted replicas."""
    items = Client().get("/api/v1/models")["items"]
    if json_output:
        return print_json(items)
    print_table(
        ["ID", "NAME", "BACKEND", "READY", "SOURCE", "CATEGORIES"],
        [
            (
                m["id"],
                m["name"],
                m["backend"],
                f"{m['ready_replicas']}/{m['replicas']}",
                _describe_source(m["source"]),
                ",".join(m["categories"]),
            )
            for m in items
        ],
    )


def _describe_source(source: dict[str, Any]) -> str:
    if source["type"] == "local":
        return str(source["path"])
    repo = source.get("repo_id") or source.get("model_id")
    return f"{source['type']}:{repo}" + (f"/{source['filename']}" if source.get("filename") else "")


@models_app.command("deploy")
def deploy(
    name: Annotated[str, typer.Argument(help="Model id clients will use.")],
    hf_repo: Annotated[
        str | None, typer.Option(help="Hugging Face repo, e.g. Qwen/Qwen2.5-0.5B-Instruct-GGUF.")
    ] = None,
    hf_file: Annotated[
        str | None, typer.Option("--file", help="File name or glob in the repo.")
    ] = None,
    revision: Annotated[str | None, typer.Option()] = None,
    modelscope: Annotated[str | None, typer.Option(help="ModelScope model id.")] = None,
    local_path: Annotated[str | None, typer.Option(help="Path on the worker.")] = None,
    mmproj: Annotated[
        str | None,
        typer.Option(
            help="GGUF vision models: the projector's file name or glob in the repo, or its "
            "path for --local-path (default: a *mmproj*.gguf beside the model)."
        ),
    ] = None,
    backend: Annotated[str, typer.Option(help="auto, llama.cpp (llama-box) or vllm.")] = "auto",
    backend_version: Annotated[str | None, typer.Option()] = None,
    backend_param: Annotated[
        list[str] | None,
        typer.Option(help="Extra backend argument, e.g. --backend-param=--ctx-size=4096 (repeat)."),
    ] = None,
    env: Annotated[
        list[str] | None, typer.Option(help="KEY=VALUE for the backend (repeat).")
    ] = None,
    replicas: Annotated[int, typer.Option()] = 1,
    placement: Annotated[str, typer.Option(help="spread or binpack.")] = "spread",
    worker_selector: Annotated[
        list[str] | None, typer.Option(help="label=value a worker must have (repeat).")
    ] = None,
    gpu: Annotated[
        list[str] | None, typer.Option(help="worker-name:index of an allowed GPU (repeat).")
    ] = None,
    cpu_offloading: Annotated[bool, typer.Option("--cpu-offloading/--no-cpu-offloading")] = True,
    distributed: Annotated[
        bool, typer.Option("--distributed-inference/--no-distributed-inference")
    ] = True,
    restart_on_error: Annotated[
        bool, typer.Option("--restart-on-error/--no-restart-on-error")
    ] = True,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Show where it would run and the memory estimate; deploy nothing."
        ),
    ] = False,
    json_output: JsonOpt = False,
) -> None:
    """Deploy a model."""
    body: dict[str, Any] = {
        "name": name,
        "source": _source(hf_repo, hf_file, revision, modelscope, local_path, mmproj),
        "backend": backend,
        "backend_version": backend_version,
        "backend_parameters": backend_param or [],
        "env": parse_pairs(env or [], "--env"),
        "replicas": replicas,
        "placement_strategy": placement,
        "gpu_selector": gpu or [],
        "cpu_offloading": cpu_offloading,
        "distributed_inference": distributed,
        "restart_on_error": restart_on_error,
    }
    if worker_selector is not None:
        body["worker_selector"] = parse_pairs(worker_selector, "--worker-selector")
    if dry_run:
        plan = Client().post("/api/v1/models:plan", body)
        return print_json(plan) if json_output else _print_plan(plan)
    model = Client().post("/api/v1/models", body)
    if json_output:
        return print_json(model)
    typer.echo(
        f"Deployed {model['name']} (id {model['id']}) on {model['backend']}, "
        f"{model['replicas']} replica(s)"
    )


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f}"


def _print_plan(plan: dict[str, Any]) -> None:
    verdict = "would run" if plan["fits"] else "would wait"
    typer.echo(f"{plan['backend']}: {verdict}: {plan['message']}")
    estimate = plan["estimate"]
    if "layers" in estimate:
        one = estimate["all_layers_on_one_gpu"]
        typer.echo(
            f"estimate: {estimate['architecture']}, {estimate['layers']} layers, context "
            f"{estimate['context_size']} x {estimate['parallel']} slots; all layers on one GPU: "
            f"{_gib(one['total'])} GiB (weights {_gib(one['weights'])}, "
            f"KV {_gib(one['kv_cache'])}, compute {_gib(one['compute'])}); "
            f"CPU only: {_gib(estimate['cpu_only_ram'])} GiB RAM"
        )
    else:
        needs = ", ".join(f"tp {tp}: {_gib(n)} GiB" for tp, n in estimate["per_gpu_need"].items())
        typer.echo(
            f"estimate: weights {_gib(estimate['weights'])} GiB, --max-model-len "
            f"{estimate['max_model_len']}; per GPU {needs}"
        )
    if plan["devices"]:
        print_table(
            ["WORKER", "DEVICE", "WEIGHTS GiB", "KV GiB", "COMPUTE GiB", "TOTAL GiB"],
            [
                [
                    d["worker_name"],
                    "RAM" if d["gpu"] is None else f"GPU {d['gpu']}",
                    _gib(d["weights"]),
                    _gib(d["kv_cache"]),
                    _gib(d["compute"]),
                    _gib(d["total"]),
                ]
                for d in plan["devices"]
            ],
        )
    for reason in plan["reasons"]:
        typer.echo(f"  {reason}")
    if plan["command"]:
        typer.echo("command: " + " ".join(plan["command"]))


@models_app.command("show")
def show(name: str, json_output: JsonOpt = False) -> None:
    """Show a model's spec (and its instances, for admins)."""
    client = Client()
    model = find_model(client, name)
    try:
        instances = client.get("/api/v1/instances", model_id=model["id"])["items"]
    except CliError as e:
        if e.status != 403:
            raise
        instances = None
    if json_output:
        return print_json({**model, "instances": instances})
    print_fields(
        [
            ("id", model["id"]),
            ("name", model["name"]),
            ("source", json.dumps(model["source"])),
            (
                "backend",
                model["backend"]
                + (f" {model['backend_version']}" if model["backend_version"] else ""),
            ),
            ("backend parameters", " ".join(model["backend_parameters"])),
            ("env", format_labels(model["env"])),
            ("replicas", f"{model['ready_replicas']} ready / {model['replicas']} wanted"),
            ("placement", model["placement_strategy"]),
            ("worker selector", format_labels(model["worker_selector"]) or "(any worker)"),
            ("gpu selector", ",".join(model["gpu_selector"]) or "(any GPU)"),
            ("cpu offloading", model["cpu_offloading"]),
            ("distributed inference", model["distributed_inference"]),
            ("restart on error", model["restart_on_error"]),
            ("categories", ",".join(model["categories"])),
        ]
    )
    if instances:
        typer.echo("")
        instances_table(instances)


@models_app.command("scale")
def scale(name: str, replicas: int, json_output: JsonOpt = False) -> None:
    """Set how many instances a model should have."""
    client = Client()
    model = client.patch(f"/api/v1/models/{find_model(client, name)['id']}", {"replicas": replicas})
    if json_output:
        return print_json(model)
    typer.echo(f"Scaled {name} to {model['replicas']} replica(s)")


@models_app.command("rm")
def remove(name: str) -> None:
    """Delete a model and its instances."""
    client = Client()
    client.delete(f"/api/v1/models/{find_model(client, name)['id']}")
    typer.echo(f"Deleted {name}")
