"""``corral login`` / ``corral logout``."""

from __future__ import annotations

import secrets
import socket
from typing import Annotated

import typer

from corral.cli.client import Client, CliError
from corral.cli.profile import Profile, load_profile, save_profile


def login(
    server: Annotated[str | None, typer.Option("--server", help="Server URL.")] = None,
    username: Annotated[str, typer.Option("--username", "-u")] = "admin",
    password: Annotated[
        str | None,
        typer.Option("--password", envvar="CORRAL_PASSWORD", help="Prompted if omitted."),
    ] = None,
    api_key: Annotated[
        str | None, typer.Option("--api-key", help="Store this existing API key instead.")
    ] = None,
) -> None:
    """Log in and store the server URL and an API key for later commands."""
    profile = Profile(server_url=(server or load_profile().server_url).rstrip("/"), api_key=None)
    client = Client(profile)
    if api_key is None:
        if password is None:
            password = typer.prompt("Password", hide_input=True)
        session = client.post("/api/v1/auth/login", {"username": username, "password": password})
        token = session["token"]
        name = f"cli-{socket.gethostname()[:40]}-{secrets.token_hex(2)}"
        created = client.post("/api/v1/api-keys", {"name": name}, token=token)
        client.post("/api/v1/auth/logout", token=token)
        api_key = created["key"]
    user = client.request("GET", "/api/v1/auth/me", token=api_key)
    path = save_profile(Profile(server_url=profile.server_url, api_key=api_key))
    typer.echo(f"Logged in to {profile.server_url} as {user['username']}; key stored in {path}")


def logout() -> None:
    """Revoke the stored API key and forget it."""
    profile = load_profile()
    if profile.api_key is None:
        raise CliError("not logged in")
    key_id = profile.api_key.split("_")[1]
    try:
        Client(profile).delete(f"/api/v1/api-keys/{key_id}")
    except CliError as e:
        if e.status not in (401, 404):
            raise
    save_profile(Profile(server_url=profile.server_url, api_key=None))
    typer.echo(f"Logged out of {profile.server_url}")
