"""Where the CLI finds its server and credential.

Precedence: ``CORRAL_SERVER_URL`` / ``CORRAL_API_KEY`` > the file
``corral login`` writes (``$CORRAL_CONFIG_DIR`` or ``$XDG_CONFIG_HOME/corral``
or ``~/.config/corral``, ``cli.json``, mode 0600) > the local default.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from corral.config import DEFAULT_PORT

DEFAULT_SERVER_URL = f"http://127.0.0.1:{DEFAULT_PORT}"


def config_dir() -> Path:
    if explicit := os.environ.get("CORRAL_CONFIG_DIR"):
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "corral"


def profile_path() -> Path:
    return config_dir() / "cli.json"


@dataclass(frozen=True)
class Profile:
    server_url: str
    api_key: str | None


def load_profile() -> Profile:
    stored: dict[str, str] = {}
    path = profile_path()
    if path.exists():
        try:
            stored = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            stored = {}
    return Profile(
        server_url=os.environ.get("CORRAL_SERVER_URL")
        or stored.get("server_url")
        or DEFAULT_SERVER_URL,
        api_key=os.environ.get("CORRAL_API_KEY") or stored.get("api_key"),
    )


def save_profile(profile: Profile) -> Path:
    path = profile_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"server_url": profile.server_url, "api_key": profile.api_key}, f)
    os.chmod(path, 0o600)
    return path
