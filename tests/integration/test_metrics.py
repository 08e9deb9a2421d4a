"""``/metrics`` in Prometheus format."""

from __future__ import annotations

import httpx

from tests.helpers import ServerProcess, create_user, deploy, register_worker


def _value(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{line_start} not in metrics:\n{text}")


def test_metrics_count_the_cluster(server: ServerProcess, admin: httpx.Client) -> None:
    before = admin.get("/metrics")
    assert before.status_code == 200
    assert before.headers["content-type"].startswith("text/plain")
    pending = _value(before.text, 'corral_instances{state="pending"}')
    models = _value(before.text, "corral_models")
    not_ready = _value(before.text, 'corral_workers{state="not_ready"}')
    deploy(admin, replicas=2)
    register_worker(server.url, server.cluster_token)
    after = admin.get("/metrics").text
    assert _value(after, 'corral_instances{state="pending"}') == pending + 2
    assert _value(after, "corral_models") == models + 1
    assert _value(after, 'corral_workers{state="not_ready"}') == not_ready + 1
    assert _value(after, 'corral_instances{state="running"}') >= 0


def test_metrics_are_for_admins(admin: httpx.Client, anonymous: httpx.Client) -> None:
    _, user = create_user(admin)
    assert user.get("/metrics").status_code == 403
    assert anonymous.get("/metrics").status_code == 401
