"""``corral workers …``, ``corral keys …`` and ``corral users …``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer

from corral.cli.client import Client, CliError
from corral.cli.output import JsonOpt, format_labels, gib, print_json, print_table

workers_app = typer.Typer(help="See and label workers (admins).", no_args_is_help=True)
keys_app = typer.Typer(help="Manage your API keys.", no_args_is_help=True)
users_app = typer.Typer(help="Manage users (admins).", no_args_is_help=True)


def _find(client: Client, path: str, field: str, value: str, what: str) -> dict[str, Any]:
    for item in client.get(path)["items"]:
        if item[field] == value:
            found: dict[str, Any] = item
            return found
    raise CliError(f"no {what} named {value!r}")


def _gpus(worker: dict[str, Any]) -> str:
    devices = (worker.get("status") or {}).get("devices") or []
    parts = [
        f"{d['index']}:{d['name']} {gib(d['memory_total'])}"
        + (" (simulated)" if d["simulated"] else "")
        for d in devices
    ]
    return "; ".join(parts) or "-"


@workers_app.command("list")
def list_workers(json_output: JsonOpt = False) -> None:
    """List workers, their state, GPUs and labels."""
    items = Client().get("/api/v1/workers")["items"]
    if json_output:
        return print_json(items)
    print_table(
        ["ID", "NAME", "STATE", "ADDRESS", "GPUS", "LABELS"],
        [
            (
                w["id"],
                w["name"],
                w["state"],
                f"{w['address']}:{w['port']}",
                _gpus(w),
                format_labels(w["labels"]),
            )
            for w in items
        ],
    )


@workers_app.command("label")
def label(
    name: str,
    labels: Annotated[list[str], typer.Argument(help="key=value to set, key- to remove.")],
    json_output: JsonOpt = False,
) -> None:
    """Set or remove a worker's labels."""
    changes: dict[str, str | None] = {}
    for item in labels:
        if item.endswith("-") and "=" not in item:
            changes[item[:-1]] = None
        else:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise CliError(f"a label must look like key=value or key-, got {item!r}")
            changes[key] = value
    client = Client()
    worker = _find(client, "/api/v1/workers", "name", name, "worker")
    updated = client.patch(f"/api/v1/workers/{worker['id']}", {"labels": changes})
    if json_output:
        return print_json(updated)
    typer.echo(f"{name}: {format_labels(updated['labels'])}")


@keys_app.command("create")
def create_key(
    name: str,
    expires_in_days: Annotated[
        int | None, typer.Option(min=1, help="Days until it expires.")
    ] = None,
    json_output: JsonOpt = False,
) -> None:
    """Create an API key; it is shown once."""
    body: dict[str, Any] = {"name": name}
    if expires_in_days is not None:
        body["expires_at"] = (datetime.now(UTC) + timedelta(days=expires_in_days)).isoformat()
    key = Client().post("/api/v1/api-keys", body)
    if json_output:
        return print_json(key)
    typer.echo(key["key"])
    typer.echo("Store it now: it is not shown again.", err=True)


@keys_app.command("list")
def list_keys(
    all_users: Annotated[bool, typer.Option("--all", help="Every user's keys (admins).")] = False,
    json_output: JsonOpt = False,
) -> None:
    """List API keys (never their secrets)."""
    items = Client().get("/api/v1/api-keys", all=all_users or None)["items"]
    if json_output:
        return print_json(items)
    print_table(
        ["ID", "NAME", "USER", "CREATED", "EXPIRES"],
        [
            (
                k["id"],
                k["name"],
                k["username"],
                k["created_at"][:19],
                (k["expires_at"] or "never")[:19],
            )
            for k in items
        ],
    )


@keys_app.command("rm")
def remove_key(key_id: str) -> None:
    """Revoke an API key by id."""
    Client().delete(f"/api/v1/api-keys/{key_id}")
    typer.echo(f"Revoked {key_id}")


@users_app.command("list")
def list_users(json_output: JsonOpt = False) -> None:
    items = Client().get("/api/v1/users")["items"]
    if json_output:
        return print_json(items)
    print_table(
        ["ID", "USERNAME", "ROLE", "ACTIVE", "CREATED"],
        [(u["id"], u["username"], u["role"], u["is_active"], u["created_at"][:19]) for u in items],
    )


@users_app.command("create")
def create_user(
    username: str,
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)],
    admin: Annotated[bool, typer.Option("--admin", help="Make the user an admin.")] = False,
    json_output: JsonOpt = False,
) -> None:
    user = Client().post(
        "/api/v1/users",
        {"username": username, "password": password, "role": "admin" if admin else "user"},
    )
    if json_output:
        return print_json(user)
    typer.echo(f"Created {user['role']} {user['username']} (id {user['id']})")


@users_app.command("update")
def update_user(
    username: str,
    role: Annotated[str | None, typer.Option(help="admin or user.")] = None,
    password: Annotated[str | None, typer.Option(help="A new password.")] = None,
    active: Annotated[bool | None, typer.Option("--active/--disabled")] = None,
    json_output: JsonOpt = False,
) -> None:
    """Change a user's role, password or whether they may sign in."""
    body = {
        k: v
        for k, v in {"role": role, "password": password, "is_active": active}.items()
        if v is not None
    }
    if not body:
        raise CliError("nothing to change: give --role, --password or --active/--disabled")
    client = Client()
    user = _find(client, "/api/v1/users", "username", username, "user")
    updated = client.patch(f"/api/v1/users/{user['id']}", body)
    if json_output:
        return print_json(updated)
    typer.echo(f"Updated {username}: role {updated['role']}, active {updated['is_active']}")


@users_app.command("rm")
def remove_user(username: str) -> None:
    client = Client()
    user = _find(client, "/api/v1/users", "username", username, "user")
    client.delete(f"/api/v1/users/{user['id']}")
    typer.echo(f"Deleted {username}")
