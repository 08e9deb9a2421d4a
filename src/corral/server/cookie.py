"""The web UI's session cookie, and the rule that keeps other sites from using it.

The UI signs in with the same session tokens as the CLI, but keeps its token
in an HttpOnly cookie, so no script on the page (nor an injected one) can
read it. A cookie is sent by the browser on its own, so a request that relies
on it and changes something must also carry ``X-Corral-CSRF``: a custom
header that a page on another origin cannot add without a CORS preflight,
which corral never grants. ``SameSite=Strict`` is a second wall.

The cookie is ``Secure`` whenever the browser will keep a Secure cookie: on
https, and on loopback addresses, which browsers treat as secure contexts.
A server reached over plain http on a network address gets a cookie without
it (or the sign-in could never work) and the UI says the connection is not
encrypted; put corral behind TLS for that (docs/ui.md).
"""

from __future__ import annotations

import ipaddress
from http.cookies import CookieError, SimpleCookie

SESSION_COOKIE = "corral_session"
CSRF_HEADER = "x-corral-csrf"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def session_from(cookie_header: str | None) -> str | None:
    """The session token in a ``Cookie`` header, if there is one."""
    if not cookie_header:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(cookie_header)
    except CookieError:
        return None
    morsel = jar.get(SESSION_COOKIE)
    return morsel.value if morsel is not None and morsel.value else None


def is_secure_origin(scheme: str, host: str) -> bool:
    """Whether a browser keeps a Secure cookie set by this origin."""
    if scheme == "https":
        return True
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    name = name.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def set_cookie_header(token: str, max_age: int, *, secure: bool) -> str:
    parts = [
        f"{SESSION_COOKIE}={token}",
        "Path=/",
        f"Max-Age={max_age}",
        "HttpOnly",
        "SameSite=Strict",
    ]
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


def clear_cookie_header(*, secure: bool) -> str:
    return set_cookie_header("", 0, secure=secure)
