"""Authentication and authorisation over real HTTP."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.helpers import ServerProcess, client, create_user, login, register_worker

# Every endpoint needs a credential except these.
PUBLIC = {
    ("GET", "/healthz"),
    ("POST", "/api/v1/auth/login"),
    # API documentation: static descriptions of the API, no cluster data.
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
    ("GET", "/openapi.json"),
}


def _routes(server: ServerProcess) -> list[tuple[str, str]]:
    spec = httpx.get(f"{server.url}/openapi.json").json()
    routes = []
    for path, methods in spec["paths"].items():
        for method in methods:
            routes.append((method.upper(), path.replace("{", "").replace("}", "")))
    return routes


def test_every_endpoint_but_health_and_login_needs_a_credential(server: ServerProcess) -> None:
    routes = _routes(server)
    assert len(routes) > 20
    for method, path in routes:
        concrete = path
        for placeholder in ("user_id", "worker_id", "model_id", "instance_id", "key_id"):
            concrete = concrete.replace(placeholder, "1")
        r = httpx.request(method, server.url + concrete, json={})
        if (method, path) in PUBLIC:
            continue
        assert r.status_code == 401, (method, path, r.status_code, r.text)
        # The gateway (/v1) answers in OpenAI's error shape, with OpenAI's code.
        code = "invalid_api_key" if path.startswith("/v1/") else "unauthenticated"
        assert r.json()["error"]["code"] == code
        assert r.headers["www-authenticate"] == "Bearer"


def test_health_needs_no_credential_and_reveals_nothing(anonymous: httpx.Client) -> None:
    r = anonymous.get("/healthz")
    assert r.status_code == 200
    assert set(r.json()) == {"status", "version"}


def test_login_with_wrong_password_or_unknown_user_is_401(server: ServerProcess) -> None:
    for body in (
        {"username": "admin", "password": "wrong-password"},
        {"username": "nobody-here", "password": "whatever-1"},
    ):
        r = httpx.post(f"{server.url}/api/v1/auth/login", json=body)
        assert r.status_code == 401
        assert r.json()["error"]["message"] == "wrong username or password"


@pytest.mark.parametrize(
    "header",
    [
        "Bearer nonsense",
        "Bearer corral_aaaaaaaaaaaa_" + "b" * 48,  # well-formed, unknown id
        "Bearer corral_session_aaaaaaaaaaaa_" + "b" * 48,
        "Bearer corral_worker_aaaaaaaaaaaa_" + "b" * 48,
        "Basic YWRtaW46YWRtaW4=",
        "",
    ],
)
def test_bad_credentials_are_401(server: ServerProcess, header: str) -> None:
    r = httpx.get(f"{server.url}/api/v1/models", headers={"Authorization": header})
    assert r.status_code == 401, r.text
    assert r.json()["error"]["code"] == "unauthenticated"


def test_a_key_with_the_right_id_and_a_wrong_secret_is_401(admin: httpx.Client) -> None:
    key = admin.post("/api/v1/api-keys", json={"name": "secret-check"}).json()["key"]
    tampered = key[:-1] + ("a" if key[-1] != "a" else "b")
    assert client(str(admin.base_url), tampered).get("/api/v1/models").status_code == 401
    assert client(str(admin.base_url), key).get("/api/v1/models").status_code == 200


def test_new_user_logs_in_creates_a_key_and_uses_it(admin: httpx.Client) -> None:
    user, _ = create_user(admin)
    token = login(str(admin.base_url), user["username"], user["password"])
    session = client(str(admin.base_url), token)
    assert session.get("/api/v1/auth/me").json()["username"] == user["username"]
    created = session.post("/api/v1/api-keys", json={"name": "laptop"})
    assert created.status_code == 201
    key = created.json()["key"]
    assert key.startswith(f"corral_{created.json()['id']}_")
    as_key = client(str(admin.base_url), key)
    assert as_key.get("/api/v1/auth/me").json()["username"] == user["username"]
    assert as_key.get("/api/v1/models").status_code == 200
    # The secret is never shown again.
    listed = session.get("/api/v1/api-keys").json()["items"]
    assert [k["name"] for k in listed] == ["test", "laptop"]
    assert all("key" not in k for k in listed)
    assert key.split("_")[-1] not in str(listed)


def test_user_role_gets_403_on_admin_endpoints(admin: httpx.Client) -> None:
    _, user = create_user(admin)
    for method, path, body in [
        ("GET", "/api/v1/users", None),
        ("POST", "/api/v1/users", {"username": "x-user", "password": "password-1"}),
        ("GET", "/api/v1/users/1", None),
        ("PATCH", "/api/v1/users/1", {"role": "user"}),
        ("DELETE", "/api/v1/users/1", None),
        ("GET", "/api/v1/workers", None),
        ("GET", "/api/v1/workers/1", None),
        ("PATCH", "/api/v1/workers/1", {"labels": {"a": "b"}}),
        ("DELETE", "/api/v1/workers/1", None),
        ("GET", "/api/v1/workers/1/instances", None),
        ("POST", "/api/v1/models", {"name": "m", "source": {"type": "local", "path": "/m.gguf"}}),
        ("PATCH", "/api/v1/models/1", {"replicas": 0}),
        ("DELETE", "/api/v1/models/1", None),
        ("GET", "/api/v1/instances", None),
        ("DELETE", "/api/v1/instances/1", None),
        ("GET", "/api/v1/api-keys?all=true", None),
    ]:
        r = user.request(method, path, json=body)
        assert r.status_code == 403, (method, path, r.status_code, r.text)
        assert r.json()["error"]["code"] == "forbidden"
    # What a user may do.
    assert user.get("/api/v1/models").status_code == 200
    assert user.get("/api/v1/api-keys").status_code == 200


def test_worker_credential_cannot_act_as_a_user_or_another_worker(
    server: ServerProcess, admin: httpx.Client
) -> None:
    me, worker = register_worker(server.url, server.cluster_token)
    other, _ = register_worker(server.url, server.cluster_token)
    for method, path in [
        ("GET", "/api/v1/users"),
        ("GET", "/api/v1/workers"),
        ("GET", f"/api/v1/workers/{me['worker_id']}"),
        ("DELETE", f"/api/v1/workers/{other['worker_id']}"),
        ("GET", "/api/v1/models"),
        ("GET", "/api/v1/instances"),
        ("GET", "/api/v1/api-keys"),
        ("GET", "/api/v1/auth/me"),
        ("GET", f"/api/v1/workers/{other['worker_id']}/instances"),
    ]:
        r = worker.request(method, path)
        assert r.status_code == 403, (method, path, r.status_code, r.text)
    status = {"cpu": {"cores": 2}, "memory": {"total": 1, "used": 0}}
    assert (
        worker.post(f"/api/v1/workers/{other['worker_id']}/status", json=status).status_code == 403
    )
    assert worker.post(f"/api/v1/workers/{me['worker_id']}/status", json=status).status_code == 200
    assert worker.get(f"/api/v1/workers/{me['worker_id']}/instances").status_code == 200
    # Admins may read a worker's assignments but not report for it.
    assert admin.get(f"/api/v1/workers/{me['worker_id']}/instances").status_code == 200
    assert admin.post(f"/api/v1/workers/{me['worker_id']}/status", json=status).status_code == 403


def test_registration_needs_the_cluster_token(server: ServerProcess, admin: httpx.Client) -> None:
    body = {"name": "sneaky", "address": "10.0.0.9", "port": 10150}
    for token in ("wrong-token", admin.headers["authorization"].split()[1]):
        r = httpx.post(
            f"{server.url}/api/v1/workers/register",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 401, r.text
    assert httpx.post(f"{server.url}/api/v1/workers/register", json=body).status_code == 401


def test_expired_key_is_refused(admin: httpx.Client) -> None:
    expires = datetime.now(UTC) + timedelta(seconds=1)
    r = admin.post(
        "/api/v1/api-keys", json={"name": "short-lived", "expires_at": expires.isoformat()}
    )
    assert r.status_code == 201
    key = client(str(admin.base_url), r.json()["key"])
    assert key.get("/api/v1/models").status_code == 200
    deadline = time.monotonic() + 10
    while (r := key.get("/api/v1/models")).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert r.status_code == 401
    assert "expired" in r.json()["error"]["message"]


def test_key_already_expired_cannot_be_created(admin: httpx.Client) -> None:
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    r = admin.post("/api/v1/api-keys", json={"name": "stale", "expires_at": past})
    assert r.status_code == 422
    assert "expires_at" in r.json()["error"]["message"]


def test_revoked_key_is_refused(admin: httpx.Client) -> None:
    _, user = create_user(admin)
    key_id = user.get("/api/v1/api-keys").json()["items"][0]["id"]
    assert user.delete(f"/api/v1/api-keys/{key_id}").status_code == 204
    r = user.get("/api/v1/models")
    assert r.status_code == 401


def test_logout_ends_the_session(server: ServerProcess) -> None:
    session = client(server.url, login(server.url, "admin", server.admin_password))
    assert session.get("/api/v1/auth/me").status_code == 200
    assert session.post("/api/v1/auth/logout").status_code == 204
    assert session.get("/api/v1/auth/me").status_code == 401


def test_logout_with_an_api_key_is_a_clear_4xx(admin: httpx.Client) -> None:
    _, user = create_user(admin)
    r = user.post("/api/v1/auth/logout")
    assert r.status_code == 422
    assert "api-keys" in r.json()["error"]["message"]


def test_disabled_user_is_locked_out_everywhere(admin: httpx.Client) -> None:
    user, as_user = create_user(admin)
    assert as_user.get("/api/v1/models").status_code == 200
    assert admin.patch(f"/api/v1/users/{user['id']}", json={"is_active": False}).status_code == 200
    assert as_user.get("/api/v1/models").status_code == 401
    r = httpx.post(
        f"{admin.base_url}/api/v1/auth/login",
        json={"username": user["username"], "password": user["password"]},
    )
    assert r.status_code == 401
