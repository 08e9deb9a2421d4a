"""Process settings.

One settings class per process, built once in ``main()`` and passed down.
Precedence, highest first: command-line flag > ``CORRAL_*`` environment
variable > config file (TOML, given with ``--config``) > default.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import Field, SecretStr, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

DEFAULT_PORT = 7321
"""Not used by common services (80/443/5432/3306/6379/5672/8000/8080)."""


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "corral"


def _log_level(value: str) -> str:
    value = value.lower()
    if value not in {"debug", "info", "warning", "error", "critical"}:
        raise ValueError("log_level must be one of debug, info, warning, error, critical")
    return value


class ServerSettings(BaseSettings):
    """Settings of ``corral server`` / ``corral start``."""

    model_config = SettingsConfigDict(env_prefix="CORRAL_", extra="forbid")

    data_dir: Path = Field(default_factory=default_data_dir)
    host: str = "0.0.0.0"
    port: int = Field(default=DEFAULT_PORT, ge=1, le=65535)
    database_url: str | None = None
    bootstrap_password: SecretStr | None = None
    cluster_token: SecretStr | None = None
    log_level: str = "info"
    session_ttl_hours: int = Field(default=24 * 7, ge=1)
    cookie_secure: bool | None = Field(
        default=None,
        description="Mark the web UI's session cookie Secure: true behind a TLS proxy, "
        "false never; unset: on https and loopback addresses only.",
    )
    heartbeat_timeout: float = Field(
        default=15.0, gt=0, description="Seconds without a heartbeat before a worker is not ready."
    )
    reschedule_grace: float = Field(
        default=60.0,
        ge=0,
        description="Seconds a not-ready worker keeps its instances before they are placed again.",
    )
    placement_interval: float = Field(
        default=10.0, gt=0, description="Seconds between retries of pending instances."
    )
    gateway_max_body: int = Field(
        default=32 * 1024 * 1024,
        ge=1024,
        description="Largest request body the gateway accepts, in bytes (larger: 413).",
    )
    gateway_keepalive: float = Field(
        default=15.0,
        gt=0,
        description="Seconds of silence in a stream before the gateway sends an SSE comment.",
    )
    image_max_bytes: int = Field(
        default=20 * 1024 * 1024,
        ge=1024,
        description="Largest image a chat request may carry or link to, in bytes (larger: 400).",
    )
    image_max_pixels: int = Field(
        default=8192 * 4096, ge=1, description="Most pixels (width x height) an image may have."
    )
    image_max_count: int = Field(default=16, ge=1, description="Most images in one request.")
    image_fetch: bool = Field(
        default=True,
        description="Fetch https:// image URLs in chat requests (off: only data: URIs).",
    )
    image_fetch_timeout: float = Field(
        default=10.0, gt=0, description="Seconds a fetch of an image URL may take in all."
    )
    image_fetch_allow_http: bool = Field(
        default=False, description="Fetch plain http:// image URLs too."
    )
    image_fetch_networks: str = Field(
        default="",
        description="Networks (CIDRs, comma-separated) images may be fetched from although "
        "they are not public, e.g. an intranet's 10.0.0.0/8. Loopback, private and link-local "
        "addresses are refused unless listed here.",
    )

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        return _log_level(value)

    @field_validator("image_fetch_networks")
    @classmethod
    def _cidrs(cls, value: str) -> str:
        for part in filter(None, (p.strip() for p in value.split(","))):
            try:
                ipaddress.ip_network(part, strict=False)
            except ValueError as e:
                raise ValueError(f"image_fetch_networks: {part!r} is not a network: {e}") from e
        return value

    def image_fetch_allowed(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        parts = (p.strip() for p in self.image_fetch_networks.split(","))
        return tuple(ipaddress.ip_network(p, strict=False) for p in parts if p)

    @field_validator("bootstrap_password")
    @classmethod
    def _password_length(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 8:
            raise ValueError("bootstrap_password must have at least 8 characters")
        return value

    def local_url(self) -> str:
        """The URL at which this machine reaches the server."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    def resolved_database_url(self) -> str:
        """The SQLAlchemy URL with an async driver, SQLite in the data dir by default."""
        url = self.database_url or f"sqlite:///{self.data_dir / 'corral.db'}"
        for plain, with_driver in (
            ("postgresql://", "postgresql+asyncpg://"),
            ("postgres://", "postgresql+asyncpg://"),
            ("sqlite://", "sqlite+aiosqlite://"),
        ):
            if url.startswith(plain):
                return with_driver + url[len(plain) :]
        return url


DEFAULT_WORKER_PORT = 7322


class WorkerSettings(BaseSettings):
    """Settings of ``corral worker`` (and of the worker ``corral start`` embeds)."""

    model_config = SettingsConfigDict(env_prefix="CORRAL_WORKER_", extra="forbid")

    server_url: str
    token: SecretStr | None = Field(
        default=None,
        description="The cluster token; needed to register (once: the credential is kept).",
    )
    data_dir: Path = Field(default_factory=lambda: default_data_dir() / "worker")
    name: str | None = Field(default=None, description="Default: this machine's host name.")
    host: str = Field(default="0.0.0.0", description="Where the worker's own API listens.")
    port: int = Field(default=DEFAULT_WORKER_PORT, ge=0, le=65535, description="0: any free port.")
    advertise_address: str | None = Field(
        default=None,
        description="Address the server and other workers reach this one at "
        "(default: this machine's address on its route to the server).",
    )
    labels: dict[str, str] = Field(default_factory=dict)
    devices_file: Path | None = None
    heartbeat_interval: float = Field(default=5.0, gt=0)
    reserved_ram: int = Field(default=0, ge=0, description="Bytes of RAM kept for the system.")
    reserved_vram: int = Field(default=0, ge=0, description="Bytes per GPU kept for the system.")
    backend_ports: tuple[int, int] = Field(
        default=(40000, 41000), description="Ports inference servers listen on (first, last)."
    )
    stop_grace: float = Field(
        default=15.0, gt=0, description="Seconds an engine has to exit before SIGKILL."
    )
    ready_timeout: float = Field(
        default=1800.0, gt=0, description="Seconds an engine may take to become ready."
    )
    helper_timeout: float = Field(
        default=600.0,
        gt=0,
        description="Seconds the primary of a distributed llama.cpp instance waits for its "
        "helpers' rpc-servers (a helper may have to install llama.cpp first).",
    )
    rpc_host: str | None = Field(
        default=None,
        description="Where rpc-servers this worker runs as a helper listen (default: the "
        "advertise address). llama.cpp's RPC has no authentication: 0.0.0.0 or :: is "
        "accepted only when named here.",
    )
    cluster_network: str | None = Field(
        default=None,
        description="The cluster network (CIDR, e.g. 10.0.0.0/24): when set, rpc-servers "
        "start only on an address inside it.",
    )
    log_level: str = "info"

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        return _log_level(value)

    @field_validator("server_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("server_url must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("cluster_network")
    @classmethod
    def _cidr(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError as e:
                raise ValueError(f"cluster_network must be a network like 10.0.0.0/24: {e}") from e
        return value

    @field_validator("backend_ports")
    @classmethod
    def _port_range(cls, value: tuple[int, int]) -> tuple[int, int]:
        first, last = value
        if not 1024 <= first <= last <= 65535:
            raise ValueError("backend_ports must be FIRST,LAST with 1024 <= FIRST <= LAST <= 65535")
        return value


S = TypeVar("S", bound=BaseSettings)


class _MappingSource(PydanticBaseSettingsSource):
    """Settings read from a config file, already parsed into a mapping."""

    def __init__(self, settings_cls: type[BaseSettings], values: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._values = values

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._values)


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse a TOML config file; keys use the settings' field names."""
    try:
        with path.open("rb") as f:
            values = tomllib.load(f)
    except FileNotFoundError as e:
        raise ValueError(f"config file {path} does not exist") from e
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"config file {path} is not valid TOML: {e}") from e
    return {k.replace("-", "_"): v for k, v in values.items()}


def load_settings(cls: type[S], flags: dict[str, Any], config_file: Path | None = None) -> S:
    """Build settings with flag > env > config file > default precedence.

    ``flags`` holds only the flags the user actually gave (None means unset).
    """
    file_values = read_config_file(config_file) if config_file else {}

    class _WithFile(cls):  # type: ignore[valid-type,misc]
        @classmethod
        def settings_customise_sources(
            cls_,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, _MappingSource(settings_cls, file_values))

    _WithFile.__name__ = cls.__name__
    given = {k: v for k, v in flags.items() if v is not None}
    settings: S = _WithFile(**given)
    return settings
