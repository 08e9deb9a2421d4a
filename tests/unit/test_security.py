"""Credentials: format, parsing, hashing."""

from __future__ import annotations

import pytest

from corral.server.security import (
    CredentialKind,
    hash_password,
    hash_secret,
    new_credential,
    parse_credential,
    secret_matches,
    verify_password,
)


@pytest.mark.parametrize("kind", list(CredentialKind))
def test_credentials_round_trip(kind: CredentialKind) -> None:
    credential = new_credential(kind)
    assert parse_credential(str(credential)) == credential


def test_api_key_format() -> None:
    key = str(new_credential(CredentialKind.API_KEY))
    prefix, key_id, secret = key.split("_")
    assert prefix == "corral" and len(key_id) == 12 and len(secret) == 48


@pytest.mark.parametrize(
    "token",
    [
        "",
        "corral",
        "corral__",
        "corral_abc_def",
        "corral_session_x_y",
        "Bearer corral_a_b",
        "corral_AAAAAAAAAAAA_" + "a" * 48,
        "corral_aaaaaaaaaaaa_" + "a" * 47,
        "corral_other_aaaaaaaaaaaa_" + "a" * 48,
    ],
)
def test_foreign_tokens_do_not_parse(token: str) -> None:
    assert parse_credential(token) is None


def test_only_the_right_secret_matches() -> None:
    credential = new_credential(CredentialKind.API_KEY)
    stored = hash_secret(credential.secret)
    assert credential.secret not in stored
    assert secret_matches(credential.secret, stored)
    # Change the last character to another one (a fixed "0" is the same one
    # time in 36, when the random secret already ends in 0).
    last = "1" if credential.secret.endswith("0") else "0"
    assert not secret_matches(credential.secret[:-1] + last, stored)


def test_passwords_use_argon2() -> None:
    stored = hash_password("correct horse")
    assert stored.startswith("$argon2")
    assert verify_password("correct horse", stored)
    assert not verify_password("wrong horse", stored)
    assert not verify_password("anything", "not-a-hash")
