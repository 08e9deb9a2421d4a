"""The web UI's session cookie: found among other applications' cookies, and
Secure exactly where a browser keeps a Secure cookie."""

from __future__ import annotations

import pytest

from corral.server.cookie import (
    clear_cookie_header,
    is_secure_origin,
    session_from,
    set_cookie_header,
)

TOKEN = "corral_session_abcdefghijkl_" + "x" * 48


@pytest.mark.parametrize(
    "header",
    [
        f"corral_session={TOKEN}",
        f"theme=dark; corral_session={TOKEN}",
        # Cookies that Python's http.cookies gives up on, set by other
        # applications on the same host (cookies ignore ports):
        f'grafana={{"a": 1, "b": 2}}; corral_session={TOKEN}',
        f"x=a b; corral_session={TOKEN}",
        f"path=/; corral_session={TOKEN}; other=1",
        f'corral_session="{TOKEN}"',
    ],
)
def test_the_session_is_found_among_other_cookies(header: str) -> None:
    assert session_from(header) == TOKEN


@pytest.mark.parametrize("header", [None, "", "theme=dark", "corral_session=", "corral_session"])
def test_no_session_without_the_cookie(header: str | None) -> None:
    assert session_from(header) is None


@pytest.mark.parametrize(
    ("scheme", "host", "secure"),
    [
        ("https", "corral.example.com", True),
        ("http", "127.0.0.1:7321", True),
        ("http", "localhost:7321", True),
        ("http", "ui.localhost", True),
        ("http", "[::1]:7321", True),
        ("http", "[::1]", True),
        ("http", "::1", True),
        ("http", "10.0.0.5:7321", False),
        ("http", "corral.lan", False),
        ("http", "[fd00::5]:7321", False),
        ("http", "", False),
    ],
)
def test_secure_where_browsers_keep_secure_cookies(scheme: str, host: str, secure: bool) -> None:
    assert is_secure_origin(scheme, host) is secure


def test_the_cookie_attributes() -> None:
    header = set_cookie_header(TOKEN, 3600, secure=True)
    assert header == (
        f"corral_session={TOKEN}; Path=/; Max-Age=3600; HttpOnly; SameSite=Strict; Secure"
    )
    assert "Secure" not in set_cookie_header(TOKEN, 3600, secure=False)
    assert clear_cookie_header(secure=False).startswith("corral_session=; Path=/; Max-Age=0")
