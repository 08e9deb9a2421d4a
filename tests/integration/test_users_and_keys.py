"""Users and API keys through the management API."""

from __future__ import annotations

import httpx
import pytest

from tests.helpers import client, create_user, login, unique


def test_user_lifecycle(admin: httpx.Client) -> None:
    name = unique("alice")
    r = admin.post("/api/v1/users", json={"username": name, "password": "password-1"})
    assert r.status_code == 201
    user = r.json()
    assert user["role"] == "user" and user["is_active"]
    assert "password-1" not in str(user) and "password_hash" not in user
    assert admin.get(f"/api/v1/users/{user['id']}").json()["username"] == name
    assert name in [u["username"] for u in admin.get("/api/v1/users").json()["items"]]

    r = admin.patch(f"/api/v1/users/{user['id']}", json={"role": "admin"})
    assert r.json()["role"] == "admin"
    r = admin.patch(f"/api/v1/users/{user['id']}", json={"password": "password-2"})
    assert r.status_code == 200
    login(str(admin.base_url), name, "password-2")

    assert admin.delete(f"/api/v1/users/{user['id']}").status_code == 204
    r = admin.get(f"/api/v1/users/{user['id']}")
    assert r.status_code == 404
    assert r.json()["error"] == {
        "code": "not_found",
        "message": f"user {user['id']} does not exist",
    }


def test_duplicate_username_is_409(admin: httpx.Client) -> None:
    name = unique("bob")
    body = {"username": name, "password": "password-1"}
    assert admin.post("/api/v1/users", json=body).status_code == 201
    r = admin.post("/api/v1/users", json=body)
    assert r.status_code == 409
    assert name in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"username": "", "password": "password-1"}, "username"),
        ({"username": "has space", "password": "password-1"}, "username"),
        ({"username": "short-pw", "password": "1234"}, "password"),
        ({"username": "bad-role", "password": "password-1", "role": "root"}, "role"),
        ({"username": "extra", "password": "password-1", "is_superuser": True}, "is_superuser"),
        ({"username": 42, "password": "password-1"}, "username"),
        ({"password": "password-1"}, "username"),
    ],
)
def test_bad_user_input_is_422_naming_the_field(
    admin: httpx.Client, body: dict[str, object], field: str
) -> None:
    r = admin.post("/api/v1/users", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "validation_error"
    assert field in r.json()["error"]["message"]


def test_the_last_admin_cannot_be_removed_or_demoted(admin: httpx.Client) -> None:
    admins = [
        u
        for u in admin.get("/api/v1/users").json()["items"]
        if u["role"] == "admin" and u["is_active"]
    ]
    # Demote every other admin the tests made, so "admin" is the last one.
    for other in admins:
        if other["username"] != "admin":
            assert (
                admin.patch(f"/api/v1/users/{other['id']}", json={"role": "user"}).status_code
                == 200
            )
    me = admin.get("/api/v1/auth/me").json()
    for method, body in (
        ("PATCH", {"role": "user"}),
        ("PATCH", {"is_active": False}),
        ("DELETE", None),
    ):
        r = admin.request(method, f"/api/v1/users/{me['id']}", json=body)
        assert r.status_code == 409, r.text
        assert "last active admin" in r.json()["error"]["message"]
    assert admin.get("/api/v1/auth/me").json()["role"] == "admin"


def test_user_changes_own_password(admin: httpx.Client) -> None:
    user, as_user = create_user(admin)
    r = as_user.post(
        "/api/v1/users/me/password",
        json={"current_password": "wrong-one", "new_password": "new-password-1"},
    )
    assert r.status_code == 401
    r = as_user.post(
        "/api/v1/users/me/password",
        json={"current_password": user["password"], "new_password": "new-password-1"},
    )
    assert r.status_code == 200
    login(str(admin.base_url), user["username"], "new-password-1")


def test_api_key_names_are_unique_per_user(admin: httpx.Client) -> None:
    _, alice = create_user(admin)
    _, bob = create_user(admin)
    assert alice.post("/api/v1/api-keys", json={"name": "ci"}).status_code == 201
    r = alice.post("/api/v1/api-keys", json={"name": "ci"})
    assert r.status_code == 409
    assert bob.post("/api/v1/api-keys", json={"name": "ci"}).status_code == 201


def test_users_cannot_see_or_revoke_each_others_keys(admin: httpx.Client) -> None:
    _, alice = create_user(admin)
    _, bob = create_user(admin)
    alice_key = alice.get("/api/v1/api-keys").json()["items"][0]
    assert all(k["id"] != alice_key["id"] for k in bob.get("/api/v1/api-keys").json()["items"])
    r = bob.delete(f"/api/v1/api-keys/{alice_key['id']}")
    assert r.status_code == 404
    assert alice.get("/api/v1/models").status_code == 200
    # Admins see and can revoke everyone's.
    all_keys = admin.get("/api/v1/api-keys", params={"all": "true"}).json()["items"]
    assert alice_key["id"] in [k["id"] for k in all_keys]
    assert admin.delete(f"/api/v1/api-keys/{alice_key['id']}").status_code == 204
    assert alice.get("/api/v1/models").status_code == 401


@pytest.mark.parametrize(
    "body",
    [{}, {"name": ""}, {"name": "x" * 65}, {"name": "ok", "expires_at": "tomorrow"}, {"name": 3}],
)
def test_bad_api_key_input_is_422(admin: httpx.Client, body: dict[str, object]) -> None:
    r = admin.post("/api/v1/api-keys", json=body)
    assert r.status_code == 422, r.text


def test_deleting_a_user_revokes_their_keys(admin: httpx.Client) -> None:
    user, as_user = create_user(admin)
    assert admin.delete(f"/api/v1/users/{user['id']}").status_code == 204
    assert as_user.get("/api/v1/models").status_code == 401


def test_session_token_works_like_a_key(admin: httpx.Client) -> None:
    user, _ = create_user(admin)
    session = client(
        str(admin.base_url), login(str(admin.base_url), user["username"], user["password"])
    )
    assert session.get("/api/v1/models").status_code == 200
    assert session.get("/api/v1/users").status_code == 403
