"""The web UI in a real browser (Debian's headless Chromium, driven by
Playwright) against a real ``corral start``: its embedded worker with two
simulated GPUs, real llama-server engines on the tiny models.

A newcomer's first session, as one story: sign in with the generated
password and be made to change it; see the worker and its GPUs; preview a
deploy that does not fit and read why; deploy the tiny GGUF model and watch
it reach ``running`` (while another tab's cluster view fills in by itself);
read the instance's placement, history, command and log; restart it; chat
in the playground with streamed tokens; embed; read usage; create an API
key, use it, revoke it. Then a user who is not an admin. Screenshots of each
page land in test-artifacts/screenshots/.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import openai
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.backends import install_llama_cpp
from tests.browser import chromium, screenshot
from tests.fixtures.tiny_models import TinyModels, cached
from tests.helpers import ServerProcess, client, create_user, login, run_server
from tests.workers import wait_running

pytestmark = pytest.mark.timeout(420)

NEW_PASSWORD = "a-better-password-1"
ENGINE_S = 90_000  # ms: a llama-server start, with room for a loaded machine


@dataclass
class Site:
    server: ServerProcess
    models: TinyModels
    browser: Browser
    generated_password: str


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    install_llama_cpp(tmp_path_factory.mktemp("seed"))
    models = cached()
    directory = tmp_path_factory.mktemp("ui")
    devices = directory / "devices.yaml"
    devices.write_text(
        "devices:\n"
        "  - name: Simulated GPU 0\n    memory: 1GiB\n"
        "  - name: Simulated GPU 1\n    memory: 64MiB\n"
    )
    with (
        run_server(
            directory,
            command="start",
            extra_args=["--worker-name", "main", "--devices-file", str(devices)],
            bootstrap_password=None,  # generated, as on a real first start
        ) as server,
        chromium() as browser,
    ):
        password = (server.data_dir / "initial_admin_password").read_text().strip()
        yield Site(server, models, browser, password)


def new_page(site: Site) -> tuple[BrowserContext, Page, list[str]]:
    context = site.browser.new_context(
        base_url=site.server.url, viewport={"width": 1366, "height": 900}
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    return context, page, errors


def sign_in(page: Page, username: str, password: str) -> None:
    page.goto("/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def test_a_newcomer_runs_a_model_from_the_browser(site: Site) -> None:
    context, page, errors = new_page(site)

    # Sign in with the generated password: a new one is asked for first.
    page.goto("/")
    screenshot(page, "00-sign-in")
    sign_in(page, "admin", "wrong-password")
    expect(page.get_by_role("alert")).to_have_text("Wrong username or password.")
    sign_in(page, "admin", site.generated_password)
    expect(page.get_by_role("heading", name="Change your password")).to_be_visible()
    expect(page.get_by_text("still has the password corral generated")).to_be_visible()
    page.goto("/#/models")  # no way around it
    expect(page.get_by_role("heading", name="Change your password")).to_be_visible()
    screenshot(page, "01-change-password")
    page.get_by_label("Current password").fill(site.generated_password)
    page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    page.get_by_label("New password again").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Change password").click()

    # The cluster: the worker, its two simulated GPUs as empty bars.
    expect(page.get_by_role("heading", name="Cluster")).to_be_visible()
    worker = page.locator("section.worker", has=page.get_by_role("heading", name="main"))
    expect(worker.get_by_text("ready", exact=True)).to_be_visible()
    expect(worker.get_by_text("GPU 0: Simulated GPU 0")).to_be_visible()
    expect(worker.get_by_text("GPU 1: Simulated GPU 1")).to_be_visible()
    expect(worker.get_by_text("simulated", exact=True)).to_have_count(2)
    expect(worker.get_by_role("img", name="GPU 0: Simulated GPU 0: 0 B claimed")).to_be_visible()
    screenshot(page, "02-cluster-empty")
    # A second tab stays on the cluster view; it must fill in by itself.
    watcher = context.new_page()
    watcher.goto("/#/cluster")
    expect(watcher.get_by_text("GPU 0: Simulated GPU 0")).to_be_visible()

    # A spec that cannot fit: the small GPU only, no CPU offloading.
    page.get_by_role("link", name="Deploy").click()
    page.get_by_label("Name").fill("tiny")
    page.get_by_label("Source").select_option("local")
    page.get_by_label("Path").fill(str(site.models.gguf_f16))
    expect(page.get_by_text("auto resolves to llama.cpp")).to_be_visible()
    expect(page.get_by_label("Worker selector")).to_have_value("")
    page.get_by_label("main:1 — Simulated GPU 1, 64.0 MiB (simulated)").check()
    page.get_by_label("CPU offloading").uncheck()
    page.get_by_role("button", name="Preview placement").click()
    expect(page.get_by_text("Does not fit")).to_be_visible()
    reasons = page.locator(".reasons li")
    expect(reasons).to_have_count(1)
    expect(reasons.first).to_contain_text("main")
    expect(reasons.first).to_contain_text("cpu_offloading is off")
    screenshot(page, "03-deploy-does-not-fit")

    # Fixed: any GPU. The preview shows the estimate per device, then deploy.
    page.get_by_label("main:1 — Simulated GPU 1, 64.0 MiB (simulated)").uncheck()
    page.get_by_label("CPU offloading").check()
    page.get_by_role("button", name="Preview placement").click()
    expect(page.get_by_text("Fits:")).to_be_visible()
    per_device = page.get_by_role("table", name="Memory per device")
    expect(per_device.get_by_role("cell", name="GPU 0", exact=True)).to_be_visible()
    expect(page.locator("pre.command")).to_contain_text("llama-server")
    screenshot(page, "04-deploy-preview")
    page.get_by_role("button", name="Deploy", exact=True).click()
    expect(page.get_by_role("heading", name="tiny", exact=True)).to_be_visible()
    expect(page.get_by_title("ready / wanted")).to_have_text("1 / 1", timeout=ENGINE_S)
    screenshot(page, "05-model")

    # The other tab's bar now names the instance, without a reload.
    gpu0 = watcher.locator(".memory", has_text="GPU 0: Simulated GPU 0")
    expect(gpu0.locator(".legend").get_by_role("link", name="tiny-")).to_be_visible()
    expect(gpu0.locator(".seg")).to_have_count(1)
    screenshot(watcher, "06-cluster-with-model")
    watcher.close()

    # The instance: placement, history, command, log.
    page.locator("table").get_by_role("link", name="tiny-").click()
    expect(page.locator("#instance-state")).to_have_text("running")
    expect(
        page.get_by_text("1 of 1 on GPUs").or_(page.get_by_text("GPU 0", exact=True)).first
    ).to_be_visible()
    history = page.get_by_role("table").filter(has=page.get_by_role("columnheader", name="When"))
    for state in ("pending", "scheduled", "starting", "running"):
        expect(history.get_by_text(state, exact=True).first).to_be_visible()
    expect(page.locator("pre.command")).to_contain_text("--n-gpu-layers")
    expect(page.locator("pre.log")).to_contain_text("[corral] ready")
    page.get_by_label("Follow").check()
    expect(page.locator("pre.log")).to_contain_text("[corral] ready")
    screenshot(page, "07-instance")

    # Restart in place: the history says who asked, and it runs again.
    page.get_by_role("button", name="Restart").click()
    expect(history.get_by_text("restart asked by admin")).to_be_visible()
    expect(page.locator("#instance-state")).to_have_text("running", timeout=ENGINE_S)

    # The playground: streamed tokens, time to first token, token counts.
    page.get_by_role("link", name="Playground").click()
    page.get_by_label("System prompt").fill("You are terse.")
    page.get_by_label("Max tokens").fill("24")
    page.get_by_label("Message").fill("Hello there")
    page.get_by_label("Message").press("Enter")
    expect(page.locator(".stats")).to_contain_text("time to first token", timeout=30_000)
    expect(page.locator(".stats")).to_contain_text("completion tokens")
    answer = page.locator(".msg.assistant .text").last
    assert int(answer.get_attribute("data-chunks") or 0) > 1, "the answer did not stream"
    assert answer.inner_text().strip()
    screenshot(page, "08-playground")

    # Embeddings, from a second model deployed through the API.
    with client(site.server.url, login(site.server.url, "admin", NEW_PASSWORD)) as admin:
        r = admin.post(
            "/api/v1/models",
            json={
                "name": "tiny-embed",
                "source": {"type": "local", "path": str(site.models.gguf_embed)},
                "categories": ["embedding"],
            },
        )
        assert r.status_code == 201, r.text
        wait_running(admin, r.json()["id"])
    page.reload()
    page.get_by_role("tab", name="Embeddings").click()
    expect(page.get_by_role("tabpanel").get_by_label("Model")).to_have_value("tiny-embed")
    page.get_by_label("Texts").fill("a red apple\na green pear")
    page.get_by_role("button", name="Embed").click()
    expect(page.get_by_text("2 vector(s) of 256 dimensions")).to_be_visible()
    screenshot(page, "09-embeddings")

    # Usage: today's tokens, per model.
    page.get_by_role("link", name="Usage").click()
    expect(page.locator(".chart .legend")).to_contain_text("tiny")
    per_model = page.get_by_role("table", name="Per model")
    expect(per_model.get_by_role("cell", name="tiny", exact=True)).to_be_visible()
    screenshot(page, "10-usage")

    # An API key: shown once, works, revoked, stops working.
    page.get_by_role("link", name="API keys").click()
    page.get_by_label("Name").fill("laptop")
    page.get_by_role("button", name="Create key").click()
    expect(page.get_by_text("corral shows it only once")).to_be_visible()
    key = page.get_by_label("The new key").input_value()
    assert key.startswith("corral_")
    screenshot(page, "11-keys")
    sdk = openai.OpenAI(base_url=f"{site.server.url}/v1", api_key=key, max_retries=0)
    assert "tiny" in [m.id for m in sdk.models.list()]
    page.get_by_role("button", name="Revoke laptop").click()
    page.get_by_role("button", name="Really revoke laptop? Press again").click()
    expect(page.get_by_text("Key laptop revoked")).to_be_visible()
    expect(page.get_by_role("cell", name="laptop", exact=True)).to_have_count(0)
    with pytest.raises(openai.AuthenticationError):
        sdk.models.list()

    # Sign out: back to the sign-in form, and the session is gone.
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in to corral")).to_be_visible()
    page.goto("/#/cluster")
    expect(page.get_by_role("heading", name="Sign in to corral")).to_be_visible()
    assert errors == []
    context.close()


def test_a_user_sees_models_playground_keys_and_usage_but_not_the_cluster(
    site: Site,
) -> None:
    password = site.generated_password
    token = None
    # The admin password may have been changed by the test before (or not, alone).
    for candidate in (NEW_PASSWORD, password):
        r = httpx.post(
            f"{site.server.url}/api/v1/auth/login",
            json={"username": "admin", "password": candidate},
        )
        if r.status_code == 200:
            token = r.json()["token"]
            break
    assert token is not None
    with client(site.server.url, token) as admin:
        user, _ = create_user(admin)
    context, page, errors = new_page(site)
    # By keyboard: the username field has the focus, Enter submits.
    page.goto("/")
    expect(page.get_by_label("Username")).to_be_focused()
    page.keyboard.type(user["username"])
    page.keyboard.press("Tab")
    page.keyboard.type(user["password"])
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Models")).to_be_visible()
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link")).to_have_text(["Models", "Playground", "API keys", "Usage"])
    expect(page.get_by_role("link", name="Deploy a model")).to_have_count(0)
    expect(page.get_by_role("button", name="Delete")).to_have_count(0)
    screenshot(page, "12-user-models")
    page.goto("/#/cluster")
    expect(page.get_by_text("This page is for admins.")).to_be_visible()
    page.goto("/#/deploy")
    expect(page.get_by_text("This page is for admins.")).to_be_visible()
    page.get_by_role("link", name="API keys").click()
    expect(page.get_by_text("Every user's keys")).to_have_count(0)
    assert errors == []
    context.close()
