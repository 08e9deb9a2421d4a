"""Files the server keeps in its data directory."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

CLUSTER_TOKEN_FILE = "cluster_token"
INITIAL_PASSWORD_FILE = "initial_admin_password"


def prepare(data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)


def write_secret(path: Path, value: str) -> None:
    """Write a secret readable by its owner only (0600 from the first byte)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    os.chmod(path, 0o600)


def cluster_token(data_dir: Path, given: str | None) -> str:
    """The token workers register with: the one given, else the one in the
    data dir, else a new one written there."""
    if given:
        return given
    path = data_dir / CLUSTER_TOKEN_FILE
    if path.exists():
        return path.read_text().strip()
    token = secrets.token_urlsafe(32)
    write_secret(path, token)
    return token
