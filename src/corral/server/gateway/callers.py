"""Who is calling: bearer tokens resolved once and remembered for a few seconds.

Checking a key means a database read and a hash; doing it on every request
would cost more than the rest of the gateway together. A token seen in the
last ``TTL_S`` seconds is answered from memory, by a dict lookup on the token
itself. What that costs in freshness: a key revoked, a user disabled on
*another* server process is still accepted for up to ``TTL_S`` seconds; on
this process the management API clears the cache at once (``forget``).
Failed lookups are not remembered, so a new key works at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from corral.errors import AuthenticationError
from corral.server.db.engine import Database
from corral.server.gateway.errors import forbidden, unauthenticated
from corral.server.security import CredentialKind, parse_credential
from corral.server.services import auth

TTL_S = 5.0
MAX_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class Caller:
    """The user behind a request, and the key it came with (for usage)."""

    user_id: int
    api_key_id: str
    """The API key's id; ``""`` for a session token (the web UI, the CLI)."""


class Callers:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._known: dict[str, tuple[float, Caller]] = {}

    def forget(self) -> None:
        """Drop everything remembered: a key, user or session changed here."""
        self._known.clear()

    async def resolve(self, authorization: bytes | None) -> Caller:
        """The caller an ``Authorization`` header names; a 401/403
        ``GatewayError`` when it names none."""
        if not authorization:
            raise unauthenticated("Missing API key: send 'Authorization: Bearer <key>'.")
        scheme, _, token_bytes = authorization.partition(b" ")
        if scheme.lower() != b"bearer" or not token_bytes.strip():
            raise unauthenticated("Malformed Authorization header: send 'Bearer <key>'.")
        token = token_bytes.strip().decode("latin-1")
        known = self._known.get(token)
        now = time.monotonic()
        if known is not None and known[0] > now:
            return known[1]
        caller = await self._look_up(token)
        if len(self._known) >= MAX_ENTRIES:
            # Oldest first (insertion order); a full cache costs a lookup, not memory.
            for stale in list(self._known)[: MAX_ENTRIES // 10]:
                del self._known[stale]
        self._known[token] = (now + TTL_S, caller)
        return caller

    async def _look_up(self, token: str) -> Caller:
        try:
            principal = await auth.authenticate(self._db, token)
        except AuthenticationError as e:
            raise unauthenticated(f"Invalid API key: {e.message}.") from e
        if principal.user is None:
            raise forbidden("The gateway takes a user's API key, not a worker's credential.")
        credential = parse_credential(token)
        key_id = (
            credential.id
            if credential is not None and credential.kind is CredentialKind.API_KEY
            else ""
        )
        return Caller(user_id=principal.user.id, api_key_id=key_id)
