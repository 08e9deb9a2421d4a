"""``corral instances …``: where each model's copies run, and their logs."""

from __future__ import annotations

import contextlib
import sys
from typing import Annotated, Any

import typer

from corral.cli.client import Client, find_model
from corral.cli.output import JsonOpt, gib, print_fields, print_json, print_table

instances_app = typer.Typer(help="See model instances.", no_args_is_help=True)


def _state(instance: dict[str, Any]) -> str:
    progress = instance.get("download_progress")
    if instance["state"] == "downloading" and progress is not None:
        return f"downloading {progress:.0%}"
    return str(instance["state"])


def _where(instance: dict[str, Any]) -> str:
    """The worker, and a distributed instance's helpers after a ``+``."""
    helpers = sorted({r["worker_name"] for r in instance.get("rpc_servers") or []})
    worker = instance["worker_name"] or "-"
    return f"{worker} +{','.join(helpers)}" if helpers else worker


def instances_table(items: list[dict[str, Any]]) -> None:
    print_table(
        ["ID", "NAME", "MODEL", "WORKER", "STATE", "PORT", "RESTARTS", "MESSAGE"],
        [
            (
                i["id"],
                i["name"],
                i["model_name"],
                _where(i),
                _state(i),
                i["port"] or "-",
                i["restart_count"],
                (i["state_message"] or "").partition("\n")[0],
            )
            for i in items
        ],
    )


@instances_app.command("list")
def list_instances(
    model: Annotated[str | None, typer.Option(help="Only this model's instances.")] = None,
    state: Annotated[str | None, typer.Option(help="Only instances in this state.")] = None,
    json_output: JsonOpt = False,
) -> None:
    """List instances and where they run."""
    client = Client()
    model_id = find_model(client, model)["id"] if model else None
    items = client.get("/api/v1/instances", model_id=model_id, state=state)["items"]
    if json_output:
        return print_json(items)
    instances_table(items)


@instances_app.command("show")
def show_instance(instance_id: int, json_output: JsonOpt = False) -> None:
    """Show one instance: where it runs, its layers, and a distributed one's helpers."""
    instance = Client().get(f"/api/v1/instances/{instance_id}")
    if json_output:
        return print_json(instance)
    placement = instance["placement"] or {}
    print_fields(
        [
            ("Name", instance["name"]),
            ("Model", instance["model_name"]),
            ("Worker", _where(instance)),
            ("State", _state(instance)),
            ("Message", (instance["state_message"] or "-").partition("\n")[0]),
            ("Placement", placement.get("summary") or "-"),
            ("Command", " ".join(instance["command"] or []) or "-"),
        ]
    )
    helpers = instance["rpc_servers"]
    if helpers:
        typer.echo("\nHelpers (rpc-servers, in --rpc order):")
        print_table(
            ["ID", "WORKER", "GPU", "ENDPOINT", "CLAIMED", "STATE", "PID", "MESSAGE"],
            [
                (
                    r["id"],
                    r["worker_name"],
                    r["device"],
                    f"{r['address']}:{r['port']}" if r["port"] else "-",
                    gib(r["memory"]),
                    r["state"],
                    r["pid"] or "-",
                    (r["state_message"] or "").partition("\n")[0],
                )
                for r in helpers
            ],
        )
    planned = placement.get("layers") or []
    if planned:
        typer.echo("\nLayers as placed:")
        print_table(
            ["WORKER", "DEVICE", "LAYERS", "CLAIMED"],
            [
                (
                    s["worker_name"],
                    "CPU" if s["gpu"] is None else f"GPU {s['gpu']}",
                    f"{s['first']}-{s['end'] - 1}" if s["end"] > s["first"] else "-",
                    gib(s["memory"]),
                )
                for s in planned
            ],
        )
    reported = instance["layers"] or []
    if reported:
        typer.echo("\nLayers as the engine reports them:")
        print_table(
            ["DEVICE", "LAYERS", "ALLOCATED"],
            [
                (
                    s["device"],
                    f"{s['first']}-{s['end'] - 1}",
                    gib(s["memory"]) if s["memory"] is not None else "-",
                )
                for s in reported
            ],
        )


@instances_app.command("logs")
def logs(
    instance_id: int,
    tail: Annotated[int, typer.Option(help="Lines of the log to show first.")] = 200,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing what the engine writes.")
    ] = False,
    rpc_server: Annotated[
        int | None,
        typer.Option("--rpc-server", help="A helper's rpc-server log instead (its id: see show)."),
    ] = None,
) -> None:
    """Show an instance's engine log (or a helper's), read from its worker."""
    out = sys.stdout.buffer
    with contextlib.suppress(KeyboardInterrupt):
        for chunk in Client().stream_text(
            f"/api/v1/instances/{instance_id}/logs",
            tail=tail,
            follow=int(follow),
            rpc_server=rpc_server,
        ):
            out.write(chunk)
            out.flush()
