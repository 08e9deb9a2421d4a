// One instance: state and its history, the placement (worker, devices,
// layers on GPU and CPU, tensor split, helpers), the launch command and the
// engine's log (followed live on request). Restart and delete.
import { CSRF, del, failure, get, poll, post } from "../api.js";
import { badge, bytes, fill, h, note, table, toast, when } from "../dom.js";

const EVERY_MS = 2000;
const LOG_LINES = 200;
const LOG_KEEP = 4000; // pieces of followed log kept on the page; older ones go

export function render(main, ctx, [id]) {
  const problem = h("p", { hidden: true });
  const head = h("div");
  const facts = h("div");
  const placement = h("section", { "aria-labelledby": "placement-title" });
  const history = h("section", { "aria-labelledby": "history-title" });
  const command = h("section", { "aria-labelledby": "command-title" });
  const log = logView(id);
  main.append(
    h("p", {}, h("a", { href: "#/models" }, "← Models")),
    head, problem, actions(id, ctx), facts, placement, command, history, log.el,
  );
  let shown = "";
  const stop = poll(async () => {
    const [i, events] = await Promise.all([
      get(`/api/v1/instances/${id}`),
      get(`/api/v1/instances/${id}/events`),
    ]);
    const now = JSON.stringify([i, events]);
    if (now === shown) return;
    shown = now;
    fill(head, h("div", { class: "title-row" }, h("h1", {}, i.name), badge(i.state),
      h("a", { href: `#/models/${i.model_id}` }, `model ${i.model_name}`)));
    fill(facts, h("dl", { class: "facts card" },
      h("dt", {}, "State"), h("dd", { id: "instance-state" }, i.state),
      h("dt", {}, "Message"), h("dd", {}, i.state_message || "–"),
      i.download_progress !== null
        ? [h("dt", {}, "Download"), h("dd", {}, `${Math.round(100 * i.download_progress)} %`)] : null,
      h("dt", {}, "Worker"), h("dd", {}, i.worker_name || "not placed yet"),
      h("dt", {}, "Port / pid"), h("dd", {}, `${i.port ?? "–"} / ${i.pid ?? "–"}`),
      h("dt", {}, "Restarts"), h("dd", {}, String(i.restart_count)),
      h("dt", {}, "Updated"), h("dd", {}, when(i.updated_at))));
    fill(placement, h("h2", { id: "placement-title" }, "Placement"), placementView(i));
    fill(command, h("h2", { id: "command-title" }, "Launch command"),
      i.command ? h("pre", { class: "command" }, i.command.map(quote).join(" "))
        : h("p", { class: "muted" }, "Known once the instance is placed."));
    fill(history, h("h2", { id: "history-title" }, "State history"), table(
      ["When", "State", "Message"],
      events.items.slice().reverse().map((e) => [when(e.at), badge(e.state), e.message || ""])));
  }, EVERY_MS, (e) => note(problem, e && (e.status === 404
    ? "This instance no longer exists (deleted, or replaced after a scale-down)."
    : `Could not refresh: ${e.message}`)));
  return () => {
    stop();
    log.stop();
  };
}

function actions(id, ctx) {
  const message = h("p", { hidden: true });
  const restart = h("button", { type: "button", class: "secondary" }, "Restart");
  restart.addEventListener("click", async () => {
    note(message, null);
    try {
      await post(`/api/v1/instances/${id}/restart`);
      toast("Restart asked; the worker stops the engine and starts it again.");
    } catch (e) {
      note(message, e);
    }
  });
  const remove = h("button", { type: "button", class: "danger" }, "Delete");
  remove.addEventListener("click", async () => {
    note(message, null);
    try {
      await del(`/api/v1/instances/${id}`);
      toast("Instance deleted; while the model wants replicas, a fresh one replaces it.");
      ctx.go("#/models");
    } catch (e) {
      note(message, e);
    }
  });
  return h("div", {}, h("div", { class: "row-actions" }, restart, remove,
    h("span", { class: "hint" }, "Restart keeps the place; delete lets a fresh instance be placed anew.")), message);
}

function placementView(i) {
  const p = i.placement;
  if (!p) return h("p", { class: "muted" }, i.state_message || "Not placed yet.");
  const parts = [
    h("p", {}, p.summary),
    h("dl", { class: "facts" },
      h("dt", {}, "Kind"), h("dd", {}, p.kind.replace("_", " ")),
      h("dt", {}, "Worker"), h("dd", {}, p.worker_name),
      h("dt", {}, "GPUs"), h("dd", {}, p.gpus.length ? p.gpus.map((g) => `GPU ${g}`).join(", ") : "none (CPU)"),
      p.total_layers ? [h("dt", {}, "Layers on GPU"), h("dd", {},
        `${p.gpu_layers} of ${p.total_layers} on GPUs, ${p.total_layers - p.gpu_layers} on the CPU`)] : null,
      p.tensor_split.length ? [h("dt", {}, "Tensor split"), h("dd", {}, p.tensor_split.join(", "))] : null,
      p.tensor_parallel_size > 1 ? [h("dt", {}, "Tensor parallel"), h("dd", {}, String(p.tensor_parallel_size))] : null),
  ];
  if (i.claim) {
    const rows = i.claim.workers.flatMap((c) => [
      ...Object.entries(c.gpus).map(([g, b]) => [name(i, c.worker_id), `GPU ${g}`, bytes(b)]),
      ...(c.ram ? [[name(i, c.worker_id), "RAM", bytes(c.ram)]] : []),
    ]);
    parts.push(table(["Worker", "Device", "Memory claimed"], rows, "Memory held"));
  }
  if (p.layers?.length) {
    parts.push(table(["Device", "Layers (as placed)", "Memory"],
      p.layers.map((s) => [
        s.gpu === null ? `${s.worker_name} CPU` : `${s.worker_name} GPU ${s.gpu}`,
        `${s.first}–${s.end - 1} (${s.end - s.first})`, bytes(s.memory)]), "Layers as placed"));
  }
  if (i.layers?.length) {
    parts.push(table(["Device", "Layers (as the engine reports)", "Memory"],
      i.layers.map((s) => [s.device, `${s.first}–${s.end - 1} (${s.end - s.first})`, s.memory ? bytes(s.memory) : "–"]),
      "Layers as loaded"));
  }
  if (i.rpc_servers.length) {
    parts.push(table(["Helper", "Device", "Endpoint", "Memory", "State", "Message"],
      i.rpc_servers.map((r) => [r.worker_name, `GPU ${r.device}`, r.port ? `${r.address}:${r.port}` : "–",
        bytes(r.memory), badge(r.state), r.state_message || ""]), "Helpers (rpc-servers)"));
  }
  return parts;
}

function name(i, workerId) {
  if (i.worker_id === workerId) return i.worker_name;
  return i.rpc_servers.find((r) => r.worker_id === workerId)?.worker_name || `worker ${workerId}`;
}

function quote(arg) {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", "'\\''")}'`;
}

/** The engine's log: the last lines, and with "Follow" what comes next. */
function logView(id) {
  const pre = h("pre", { class: "log", tabindex: 0, "aria-label": "Engine log" });
  const message = h("p", { hidden: true });
  const follow = h("input", { type: "checkbox", id: "log-follow" });
  let controller = null;

  async function load() {
    controller?.abort();
    controller = new AbortController();
    const mine = controller;
    note(message, null);
    pre.textContent = "";
    try {
      const url = `/api/v1/instances/${id}/logs?tail=${LOG_LINES}&follow=${follow.checked ? 1 : 0}`;
      const response = await fetch(url, { headers: CSRF, signal: mine.signal });
      if (!response.ok) throw await failure(response);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
        pre.append(value);
        while (pre.childNodes.length > LOG_KEEP) pre.firstChild.remove();
        if (atEnd) pre.scrollTop = pre.scrollHeight;
      }
      if (follow.checked && mine === controller) note(message, "The log stream ended (the engine stopped or the server restarted).", "warn");
    } catch (e) {
      if (e.name !== "AbortError") note(message, e);
    }
  }
  follow.addEventListener("change", load);
  const el = h("section", { "aria-labelledby": "log-title" },
    h("div", { class: "title-row" }, h("h2", { id: "log-title" }, "Log"),
      h("div", { class: "check" }, follow, h("label", { for: "log-follow" }, "Follow")),
      h("button", { type: "button", class: "secondary", onclick: load }, "Reload")),
    message, pre);
  load();
  return { el, stop: () => controller?.abort() };
}
