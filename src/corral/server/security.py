"""Secrets: password hashing and the credentials corral hands out.

Passwords are chosen by people, so they get argon2 (slow on purpose).
Session tokens, API keys and worker credentials are 240-bit random secrets
that corral generates: a fast SHA-256 is enough to make a leaked table
useless, and keeps the per-request check cheap on the inference path.

Credential formats (the id is public and indexes the row; only the secret's
hash is stored)::

    corral_<id>_<secret>            API key
    corral_session_<id>_<secret>    login session (CLI, UI)
    corral_worker_<id>_<secret>     a worker's own credential
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from dataclasses import dataclass
from enum import StrEnum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_ALPHABET = string.ascii_lowercase + string.digits
_ID_LENGTH = 12
_SECRET_LENGTH = 48  # log2(36) * 48 ≈ 248 bits

_hasher = PasswordHasher()


class CredentialKind(StrEnum):
    API_KEY = "api_key"
    SESSION = "session"
    WORKER = "worker"


_PREFIXES = {
    CredentialKind.API_KEY: "corral_",
    CredentialKind.SESSION: "corral_session_",
    CredentialKind.WORKER: "corral_worker_",
}


@dataclass(frozen=True)
class Credential:
    kind: CredentialKind
    id: str
    secret: str

    def __str__(self) -> str:
        return f"{_PREFIXES[self.kind]}{self.id}_{self.secret}"


def random_string(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def new_credential(kind: CredentialKind) -> Credential:
    return Credential(kind, random_string(_ID_LENGTH), random_string(_SECRET_LENGTH))


def parse_credential(token: str) -> Credential | None:
    """Split a bearer token into its parts; None when it is not corral's."""
    parts = token.split("_")
    if len(parts) == 3 and parts[0] == "corral":
        kind = CredentialKind.API_KEY
    elif len(parts) == 4 and parts[0] == "corral" and parts[1] in ("session", "worker"):
        kind = CredentialKind(parts[1])
    else:
        return None
    cred_id, secret = parts[-2], parts[-1]
    valid = (
        len(cred_id) == _ID_LENGTH
        and len(secret) == _SECRET_LENGTH
        and all(c in _ALPHABET for c in cred_id + secret)
    )
    return Credential(kind, cred_id, secret) if valid else None


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)


def tokens_equal(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password: str, stored_hash: str) -> bool:
    try:
        return _hasher.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


# A hash of a random password, verified against when the user does not exist,
# so that a wrong username takes as long as a wrong password.
DUMMY_PASSWORD_HASH = hash_password(secrets.token_urlsafe(16))


def generate_password() -> str:
    return secrets.token_urlsafe(18)
