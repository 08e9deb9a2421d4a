"""Settings precedence: flag > environment > config file > default."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.config import DEFAULT_PORT, ServerSettings, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CORRAL_PORT", "CORRAL_HOST", "CORRAL_LOG_LEVEL", "CORRAL_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)


def test_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "corral.toml"
    config.write_text('port = 9001\nhost = "10.0.0.1"\nlog-level = "warning"\n')
    assert load_settings(ServerSettings, {}, None).port == DEFAULT_PORT
    from_file = load_settings(ServerSettings, {}, config)
    assert (from_file.port, from_file.host, from_file.log_level) == (9001, "10.0.0.1", "warning")
    monkeypatch.setenv("CORRAL_PORT", "9002")
    assert load_settings(ServerSettings, {}, config).port == 9002
    assert load_settings(ServerSettings, {"port": 9003, "host": None}, config).port == 9003
    assert load_settings(ServerSettings, {"port": 9003, "host": None}, config).host == "10.0.0.1"


@pytest.mark.parametrize(
    ("content", "message"),
    [("port = 'x'", "port"), ("colour = 'blue'", "colour"), ("port = ", "not valid TOML")],
)
def test_bad_config_files_are_reported(tmp_path: Path, content: str, message: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_settings(ServerSettings, {}, config)


def test_database_url_gets_an_async_driver(tmp_path: Path) -> None:
    default = ServerSettings(data_dir=tmp_path)
    assert default.resolved_database_url() == f"sqlite+aiosqlite:///{tmp_path / 'corral.db'}"
    pg = ServerSettings(database_url="postgresql://u@db/corral")
    assert pg.resolved_database_url() == "postgresql+asyncpg://u@db/corral"
