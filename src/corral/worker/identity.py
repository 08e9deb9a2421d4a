"""The worker's identity: who it is to the server, kept across restarts.

``identity.json`` in the worker's data dir (0600) holds the server URL, the
worker id and name and the worker's own credential. A worker that restarts
uses it and needs the cluster token no more; one pointed at another server,
or whose credential the server no longer accepts, registers again.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

IDENTITY_FILE = "identity.json"


@dataclass(frozen=True)
class Identity:
    server_url: str
    worker_id: int
    name: str
    credential: str


def load_identity(data_dir: Path, server_url: str) -> Identity | None:
    """The stored identity for ``server_url``; None when there is none (or for another server)."""
    path = data_dir / IDENTITY_FILE
    try:
        data = json.loads(path.read_text())
        identity = Identity(**data)
    except (OSError, ValueError, TypeError):
        return None
    return identity if identity.server_url == server_url else None


def save_identity(data_dir: Path, identity: Identity) -> None:
    """Write atomically, readable by the owner only from the first byte."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = data_dir / IDENTITY_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(identity), f)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def default_name() -> str:
    """This machine's short host name, made a valid worker name."""
    name = socket.gethostname().split(".")[0].lower()
    cleaned = "".join(c if c.isalnum() or c in "-_." else "-" for c in name).strip("-_.")
    return cleaned[:63] or "worker"


def route_address(server_url: str) -> str:
    """This machine's address on its route to the server: what the server
    (and, usually, other workers) can reach it at. No packet is sent."""
    parts = urlsplit(server_url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        family = socket.getaddrinfo(host, port, proto=socket.IPPROTO_UDP)[0]
        with socket.socket(family[0], socket.SOCK_DGRAM) as s:
            s.connect(family[4])
            address: str = s.getsockname()[0]
            return address
    except OSError:
        return "127.0.0.1"
