// Models: the list (replicas ready / wanted, backend, categories) and one
// model with its instances. Admins scale and delete; everyone may look.
import { del, get, patch, poll } from "../api.js";
import { badge, fill, h, note, rebuild, table, toast, when } from "../dom.js";

const EVERY_MS = 2000;

export function render(main, ctx, [id]) {
  return id ? detail(main, ctx, Number(id)) : list(main, ctx);
}

function source(s) {
  if (s.type === "huggingface") return `Hugging Face ${s.repo_id}${s.filename ? ` · ${s.filename}` : ""}`;
  if (s.type === "modelscope") return `ModelScope ${s.model_id}${s.filename ? ` · ${s.filename}` : ""}`;
  return `local ${s.path}`;
}

function backend(m) {
  return `${m.backend}${m.backend_version ? ` ${m.backend_version}` : ""}`;
}

function replicas(m) {
  const tone = m.ready_replicas >= m.replicas ? "good" : "wait";
  return h("span", { class: `badge ${tone}`, title: "ready / wanted" }, `${m.ready_replicas} / ${m.replicas}`);
}

function list(main, ctx) {
  const problem = h("p", { hidden: true });
  const body = h("div");
  main.append(
    h("div", { class: "title-row" }, h("h1", {}, "Models"),
      ctx.isAdmin ? h("a", { class: "button", href: "#/deploy" }, "Deploy a model") : null),
    problem, body);
  let shown = "";
  return poll(async () => {
    const models = (await get("/api/v1/models")).items;
    // Rebuild only on news, and never under the user's hands (a value being
    // typed, a delete being confirmed).
    const now = JSON.stringify(models);
    if (now === shown || busy(body)) return;
    shown = now;
    rebuild(body, () => models.length ? table(
      ["Name", "Replicas", "Backend", "Categories", "Source", ...(ctx.isAdmin ? ["Actions"] : [])],
      models.map((m) => [
        h("a", { href: `#/models/${m.id}` }, m.name),
        replicas(m),
        backend(m),
        m.categories.join(", ") || "–",
        source(m.source),
        ...(ctx.isAdmin ? [actions(m)] : []),
      ]),
    ) : h("p", { class: "card" }, ctx.isAdmin
      ? "No model is deployed yet. Use “Deploy a model” to add one."
      : "No model is deployed yet; an admin deploys them."));
  }, EVERY_MS, (e) => note(problem, e && `Could not refresh: ${e.message}`));
}

function busy(el) {
  const focused = document.activeElement;
  return (el.contains(focused) && focused.tagName === "INPUT")
    || el.querySelector(".confirm:not([hidden])") !== null;
}

/** Scale and delete, shared by the list and the detail page. */
function actions(m, after) {
  const count = h("input", {
    type: "number", min: 0, max: 1000, value: m.replicas, class: "small",
    "aria-label": `Replicas of ${m.name}`,
  });
  const message = h("span", { hidden: true });
  const scale = h("button", { type: "button", class: "secondary" }, "Scale");
  scale.addEventListener("click", async () => {
    note(message, null);
    try {
      await patch(`/api/v1/models/${m.id}`, { replicas: Number(count.value) });
      toast(`${m.name}: ${count.value} replica(s) wanted.`);
    } catch (e) {
      note(message, e);
    }
  });
  const remove = h("button", { type: "button", class: "danger" }, "Delete");
  const confirm = h("span", { class: "confirm", hidden: true },
    `Delete ${m.name} and stop its instances? `,
    h("button", {
      type: "button", class: "danger", onclick: async () => {
        try {
          await del(`/api/v1/models/${m.id}`);
          confirm.hidden = true;
          remove.hidden = false;
          toast(`${m.name} deleted.`);
          if (after) after();
        } catch (e) {
          note(message, e);
        }
      },
    }, "Yes, delete"),
    h("button", {
      type: "button", class: "secondary",
      onclick: () => { confirm.hidden = true; remove.hidden = false; remove.focus(); },
    }, "Cancel"));
  remove.addEventListener("click", () => {
    remove.hidden = true;
    confirm.hidden = false;
    confirm.querySelector("button").focus();
  });
  return h("div", { class: "row-actions" }, count, scale, remove, confirm, message);
}

function detail(main, ctx, id) {
  const problem = h("p", { hidden: true });
  const head = h("div");
  const spec = h("div");
  const instances = h("div");
  main.append(h("p", {}, h("a", { href: "#/models" }, "← Models")), head, problem, spec, instances);
  let shownActions = false;
  return poll(async () => {
    const m = await get(`/api/v1/models/${id}`);
    fill(head, h("div", { class: "title-row" }, h("h1", {}, m.name), replicas(m)));
    if (ctx.isAdmin && !shownActions) {
      head.after(actions(m, () => ctx.go("#/models")));
      shownActions = true;
    }
    fill(spec, h("dl", { class: "facts card" },
      h("dt", {}, "Source"), h("dd", {}, source(m.source)),
      h("dt", {}, "Backend"), h("dd", {}, backend(m)),
      h("dt", {}, "Categories"), h("dd", {}, m.categories.join(", ") || "–"),
      h("dt", {}, "Worker selector"), h("dd", {}, Object.entries(m.worker_selector).map(([k, v]) => `${k}=${v}`).join(", ") || "any worker"),
      h("dt", {}, "GPU selector"), h("dd", {}, m.gpu_selector.join(", ") || "any GPU"),
      h("dt", {}, "CPU offloading"), h("dd", {}, m.cpu_offloading ? "on" : "off"),
      h("dt", {}, "Distributed inference"), h("dd", {}, m.distributed_inference ? "on" : "off"),
      h("dt", {}, "Backend parameters"), h("dd", {}, m.backend_parameters.join(" ") || "–"),
      h("dt", {}, "Environment"), h("dd", {}, Object.keys(m.env).join(", ") || "–"),
      h("dt", {}, "Created"), h("dd", {}, when(m.created_at))));
    if (ctx.isAdmin) {
      const items = (await get(`/api/v1/instances?model_id=${id}`)).items;
      fill(instances, h("h2", {}, "Instances"), table(
        ["Instance", "State", "Worker", "Devices", "Message"],
        items.map((i) => [
          h("a", { href: `#/instances/${i.id}` }, i.name),
          badge(i.state),
          [i.worker_name || "–", ...i.rpc_servers.map((r) => ` +${r.worker_name}`)].join(""),
          i.devices.length ? i.devices.map((d) => `GPU ${d}`).join(", ") : (i.worker_id ? "CPU" : "–"),
          i.state_message || "",
        ])));
    }
  }, EVERY_MS, (e) => note(problem, e && `Could not refresh: ${e.message}`));
}
