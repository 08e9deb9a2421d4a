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
encrypted; put corral behind TLS for that (docs/ui.md). Behind a TLS proxy
that corral cannot recognise, ``cookie_secure`` (``CORRAL_COOKIE_SECURE``)
says so instead of the guess.
"""

from __future__ import annotations

import ipaddress

from corral.errors import AuthenticationError, PermissionDeniedError
from corral.server.security import CredentialKind, parse_credential

SESSION_COOKIE = "corral_session"
CSRF_HEADER = "x-corral-csrf"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def session_from(cookie_header: str | None) -> str | None:
    """The session token in a ``Cookie`` header, if there is one.

    Parsed by hand, leniently, as browsers send it: ``http.cookies`` stops at
    the first cookie it dislikes, so another application's cookie on the
    same host (cookies ignore ports) would hide ours."""
    if not cookie_header:
        return None
    for part in cookie_header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name == SESSION_COOKIE and value:
            return value.strip('"')
    return None


def cookie_credential(cookie_header: str | None, method: str, csrf: bool) -> str | None:
    """The session token a request's cookie signs it in with, or None when it
    has none. The one rule for the management API and the gateway: the
    cookie must hold a session (``AuthenticationError``), and a request that
    changes something must carry the CSRF header (``PermissionDeniedError``)."""
    token = session_from(cookie_header)
    if token is None:
        return None
    credential = parse_credential(token)
    if credential is None or credential.kind is not CredentialKind.SESSION:
        raise AuthenticationError(f"the {SESSION_COOKIE} cookie holds no session: sign in again")
    if method not in SAFE_METHODS and not csrf:
        raise PermissionDeniedError(
            f"a request signed in by cookie that changes something must send the "
            f"{CSRF_HEADER} header (the web UI does)"
        )
    return token


def is_secure_origin(scheme: str, host: str) -> bool:
    """Whether a browser keeps a Secure cookie set by this origin (https, or
    a loopback host: ``localhost``, ``127.0.0.1:7321``, ``[::1]:7321``)."""
    if scheme == "https":
        return True
    if host.startswith("["):
        name = host[1 : host.find("]")] if "]" in host else host[1:]
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    name = name.lower()
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
