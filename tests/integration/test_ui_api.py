"""What the web UI stands on, over real HTTP on both databases: the session
cookie and its CSRF rule (management API and gateway), the UI's files and
headers, the cluster's memory view, an instance's state history and restart.
The browser itself is driven in tests/e2e/test_ui.py."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.fixtures.tiny_models import TinyModels
from tests.helpers import ServerProcess, create_user, unique
from tests.integration.test_placement import GIB, gguf_spec, join, wait_for


def cookie_login(server: ServerProcess, username: str, password: str) -> tuple[str, str]:
    """Sign in as the UI does; the session token and the Set-Cookie header."""
    r = httpx.post(
        f"{server.url}/api/v1/auth/login",
        json={"username": username, "password": password, "cookie": True},
    )
    assert r.status_code == 200, r.text
    assert r.json()["token"] is None  # no script ever sees it
    header = r.headers["set-cookie"]
    token = header.split(";", 1)[0].split("=", 1)[1]
    return token, header


def by_cookie(server: ServerProcess, token: str, csrf: bool = True) -> httpx.Client:
    # Set by hand: httpx keeps a Secure cookie for https only, while browsers
    # also send it to loopback addresses.
    headers = {"Cookie": f"corral_session={token}"}
    if csrf:
        headers["X-Corral-CSRF"] = "1"
    return httpx.Client(base_url=server.url, headers=headers, timeout=30)


def test_sign_in_by_cookie_is_httponly_strict_and_secure_on_loopback(
    server: ServerProcess,
) -> None:
    token, header = cookie_login(server, "admin", server.admin_password)
    attributes = {part.strip().split("=")[0].lower() for part in header.split(";")[1:]}
    assert {"httponly", "secure", "path", "max-age", "samesite"} <= attributes
    assert "SameSite=Strict" in header
    assert token.startswith("corral_session_")
    with by_cookie(server, token, csrf=False) as ui:
        me = ui.get("/api/v1/auth/me")
        assert me.status_code == 200 and me.json()["username"] == "admin"


def test_changes_by_cookie_need_the_csrf_header(server: ServerProcess) -> None:
    token, _ = cookie_login(server, "admin", server.admin_password)
    with by_cookie(server, token, csrf=False) as forged:
        r = forged.post("/api/v1/api-keys", json={"name": "forged"})
        assert r.status_code == 403
        assert "x-corral-csrf" in r.json()["error"]["message"]
        # The gateway applies the same rule; reading the model list is safe.
        assert forged.get("/v1/models").status_code == 200
        r = forged.post("/v1/chat/completions", json={"model": "m", "messages": []})
        assert r.status_code == 403
        assert "x-corral-csrf" in r.json()["error"]["message"]
    with by_cookie(server, token) as ui:
        r = ui.post("/api/v1/api-keys", json={"name": unique("ui")})
        assert r.status_code == 201, r.text
        # Past the credential check: the model is what is missing.
        r = ui.post(
            "/v1/chat/completions",
            json={"model": unique("none"), "messages": [{"role": "user", "content": "hi"}]},
        )
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "model_not_found"


def test_a_cookie_holds_a_session_only(server: ServerProcess, admin: httpx.Client) -> None:
    key = admin.post("/api/v1/api-keys", json={"name": unique("k")}).json()["key"]
    with by_cookie(server, key) as ui:
        assert ui.get("/api/v1/auth/me").status_code == 401
        assert ui.get("/v1/models").status_code == 401
    with by_cookie(server, "corral_session_garbage") as ui:
        assert ui.get("/api/v1/auth/me").status_code == 401


def test_sign_out_ends_the_session_and_clears_the_cookie(server: ServerProcess) -> None:
    token, _ = cookie_login(server, "admin", server.admin_password)
    with by_cookie(server, token) as ui:
        r = ui.post("/api/v1/auth/logout")
        assert r.status_code == 204
        assert "corral_session=;" in r.headers["set-cookie"]
        assert "Max-Age=0" in r.headers["set-cookie"]
        assert ui.get("/api/v1/auth/me").status_code == 401


def test_the_ui_is_served_with_a_strict_content_security_policy(
    anonymous: httpx.Client,
) -> None:
    page = anonymous.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/ui/js/app.js">' in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    script = anonymous.get("/ui/js/app.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert script.headers["x-content-type-options"] == "nosniff"
    assert script.headers["cache-control"] == "no-cache"
    assert anonymous.get("/ui/nothing-here.js").status_code == 404
    # The API keeps its own headers.
    assert "content-security-policy" not in anonymous.get("/healthz").headers


def _claims(cluster: dict[str, Any], worker_id: int) -> dict[str, Any]:
    return next(w for w in cluster["workers"] if w["id"] == worker_id)


def test_cluster_memory_shows_who_holds_each_gpu(
    server: ServerProcess, admin: httpx.Client, tiny_models: TinyModels
) -> None:
    pool = unique("pool")
    wid, _ = join(server, pool, [1 * GIB, 1 * GIB])
    empty = _claims(admin.get("/api/v1/cluster").json(), wid)
    assert [g["free"] for g in empty["gpus"]] == [GIB, GIB]
    assert all(g["simulated"] and g["claims"] == [] for g in empty["gpus"])
    # Split over both GPUs: each holds a share of the layers.
    model = admin.post(
        "/api/v1/models",
        json={
            "name": unique("m"),
            **gguf_spec(tiny_models.gguf_f16, pool, backend_parameters=["--split-mode", "layer"]),
            "gpu_selector": [f"{empty['name']}:0", f"{empty['name']}:1"],
        },
    ).json()
    [instance] = wait_for(admin, model["id"], lambda items: bool(items and items[0]["claim"]))
    view = _claims(admin.get("/api/v1/cluster").json(), wid)
    claimed = {
        g["index"]: g["claims"] for g in view["gpus"] if g["claims"]
    }  # one GPU or both, as placement chose
    assert claimed
    for index, claims in claimed.items():
        [claim] = claims
        assert claim["instance_id"] == instance["id"]
        assert claim["model_name"] == model["name"]
        assert claim["bytes"] == instance["claim"]["workers"][0]["gpus"][str(index)]
        assert claim["share"]  # e.g. "layers 0-1" or "3 of 3 layers"
        gpu = next(g for g in view["gpus"] if g["index"] == index)
        assert gpu["free"] == gpu["total"] - gpu["reserved"] - claim["bytes"]
    admin.delete(f"/api/v1/models/{model['id']}")


def test_cluster_memory_is_for_admins(server: ServerProcess, admin: httpx.Client) -> None:
    _, user = create_user(admin)
    r = user.get("/api/v1/cluster")
    assert r.status_code == 403


def test_state_history_and_restart_in_place(
    server: ServerProcess, admin: httpx.Client, tiny_models: TinyModels
) -> None:
    pool = unique("pool")
    wid, worker = join(server, pool, [1 * GIB])
    model = admin.post(
        "/api/v1/models", json={"name": unique("m"), **gguf_spec(tiny_models.gguf_f16, pool)}
    ).json()
    [instance] = wait_for(admin, model["id"], lambda items: bool(items and items[0]["worker_id"]))
    iid = instance["id"]
    report = {"state": "running", "state_message": None, "port": 40001, "pid": 4242}
    r = worker.post(f"/api/v1/workers/{wid}/instances/{iid}/status", json=report)
    assert r.status_code in (200, 204), r.text
    # The same state again is no new event.
    worker.post(f"/api/v1/workers/{wid}/instances/{iid}/status", json=report)

    r = admin.post(f"/api/v1/instances/{iid}/restart")
    assert r.status_code == 200, r.text
    restarted = r.json()
    assert restarted["generation"] == instance["generation"] + 1
    assert restarted["state"] == "scheduled"
    assert restarted["worker_id"] == wid  # same place, same claim
    assert restarted["claim"] == admin.get(f"/api/v1/instances/{iid}").json()["claim"]
    # The worker sees the new generation in its assignment.
    assignments = worker.get(f"/api/v1/workers/{wid}/assignments").json()["items"]
    assert [a["generation"] for a in assignments if a["instance_id"] == iid] == [1]
    # A report still on its way from the replaced engine is dropped...
    stale = {**report, "generation": 0}
    r = worker.post(f"/api/v1/workers/{wid}/instances/{iid}/status", json=stale)
    assert r.status_code == 204, r.text
    assert admin.get(f"/api/v1/instances/{iid}").json()["state"] == "scheduled"
    # ... while the new one's news counts.
    starting = {"state": "starting", "generation": 1}
    r = worker.post(f"/api/v1/workers/{wid}/instances/{iid}/status", json=starting)
    assert r.status_code == 204, r.text

    events = admin.get(f"/api/v1/instances/{iid}/events").json()["items"]
    states = [e["state"] for e in events]
    assert states == ["pending", "scheduled", "running", "scheduled", "starting"]
    assert events[0]["message"] == "waiting to be scheduled"
    assert events[-2]["message"] == "restart asked by admin"
    times = [e["at"] for e in events]
    assert times == sorted(times)

    assert admin.get("/api/v1/instances/999999/events").status_code == 404
    assert admin.post("/api/v1/instances/999999/restart").status_code == 404
    _, user = create_user(admin)
    assert user.post(f"/api/v1/instances/{iid}/restart").status_code == 403
    assert user.get(f"/api/v1/instances/{iid}/events").status_code == 403
    admin.delete(f"/api/v1/models/{model['id']}")


def test_restart_of_an_unplaced_instance_is_a_409_that_says_why(
    server: ServerProcess, admin: httpx.Client, tiny_models: TinyModels
) -> None:
    model = admin.post(
        "/api/v1/models",
        json={"name": unique("m"), **gguf_spec(tiny_models.gguf_f16, unique("no-such-pool"))},
    ).json()
    deadline = time.monotonic() + 10
    while True:
        [instance] = admin.get("/api/v1/instances", params={"model_id": model["id"]}).json()[
            "items"
        ]
        if instance["state_message"] != "waiting to be scheduled" or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    r = admin.post(f"/api/v1/instances/{instance['id']}/restart")
    assert r.status_code == 409
    assert "not placed" in r.json()["error"]["message"]
    admin.delete(f"/api/v1/models/{model['id']}")
