// The cluster: every worker with its state, labels, CPU and RAM, and each
// GPU as a bar of memory (claimed per instance, system-reserved, free).
// Refreshed every 2 s while the page is visible.
import { get, poll } from "../api.js";
import { ago, badge, bytes, h, hue, note, rebuild } from "../dom.js";

const EVERY_MS = 2000;

export function render(main) {
  const status = h("p", { class: "muted", "aria-live": "off" }, "");
  const problem = h("p", { hidden: true });
  const list = h("div", { class: "workers" });
  main.append(
    h("div", { class: "title-row" }, h("h1", {}, "Cluster"), status),
    problem,
    list,
  );
  return poll(async () => {
    const cluster = await get("/api/v1/cluster");
    rebuild(list, () => cluster.workers.length
      ? cluster.workers.map(worker)
      : h("p", { class: "card" },
        "No worker has joined yet. Start one with `corral worker --server-url … --token …` " +
        "(the cluster token is in the server's data directory)."));
    status.textContent = `Updated ${new Date().toLocaleTimeString()}`;
  }, EVERY_MS, (e) => note(problem, e && `Could not refresh: ${e.message} Retrying every ${EVERY_MS / 1000} s.`));
}

function worker(w) {
  const labels = Object.entries(w.labels).map(([k, v]) => h("span", { class: "chip" }, `${k}=${v}`));
  const cpu = w.cpu
    ? `${w.cpu.cores} cores, ${Math.round(w.cpu.utilization)} % busy`
    : "no report yet";
  return h("section", { class: "card worker", "aria-labelledby": `worker-${w.id}` },
    h("div", { class: "title-row" },
      h("h2", { id: `worker-${w.id}` }, w.name),
      badge(w.state),
      h("span", { class: "muted" }, `${w.address} · heartbeat ${ago(w.heartbeat_at)}`)),
    w.state_message ? h("p", { class: "note warn" }, w.state_message) : null,
    h("div", { class: "chips", "aria-label": "Labels" }, labels),
    h("dl", { class: "facts" }, h("dt", {}, "CPU"), h("dd", {}, cpu)),
    w.ram ? memory("RAM", w.ram, null) : null,
    w.gpus.length
      ? w.gpus.map((g) => memory(`GPU ${g.index}: ${g.name}`, g, g))
      : h("p", { class: "muted" }, "No GPU: models run on the CPU here."),
  );
}

/** One bar: a segment per claim, the reserve, and what is free. */
function memory(title, m, gpu) {
  const total = Math.max(m.total, 1);
  const pct = (n) => `${(100 * n) / total}%`;
  const segments = [
    ...m.claims.map((c) => h("span", {
      class: "seg", style: { width: pct(c.bytes), background: hue(c.instance_name) },
      title: `${c.instance_name}: ${bytes(c.bytes)} (${c.share})`,
    })),
    m.reserved ? h("span", { class: "seg reserved", style: { width: pct(m.reserved) },
      title: `system reserved: ${bytes(m.reserved)}` }) : null,
  ];
  const summary = `${bytes(m.claimed)} claimed, ${bytes(m.reserved)} reserved, ` +
    `${bytes(m.free)} free of ${bytes(m.total)}`;
  const used = m.used ? `; the ${gpu ? "device" : "machine"} reports ${bytes(m.used)} in use` : "";
  return h("div", { class: "memory" },
    h("div", { class: "memory-title" },
      h("strong", {}, title),
      gpu?.simulated ? h("span", { class: "badge sim", title: "declared in a devices file, not a real GPU" }, "simulated") : null,
      h("span", { class: "muted" }, summary + used)),
    h("div", { class: "bar", role: "img", "aria-label": `${title}: ${summary}` }, segments),
    m.claims.length ? h("ul", { class: "legend" }, m.claims.map((c) => h("li", {},
      h("span", { class: "swatch", style: { background: hue(c.instance_name) } }),
      h("a", { href: `#/instances/${c.instance_id}` }, c.instance_name),
      ` (${c.model_name}) — ${bytes(c.bytes)}, ${c.share} · `, badge(c.state)))) : null,
  );
}
