// Deploy a model: the spec as a form, and before anything is created a
// preview from the plan endpoint (the memory estimate per device and where
// it would go, or each worker's reason for refusing it).
import { get, post } from "../api.js";
import { bytes, checkbox, field, fill, h, note, table, toast } from "../dom.js";

const VLLM_DEFAULT = "os=linux\narch=amd64";
const CATEGORIES = ["llm", "embedding", "reranker", "vision"];

export async function render(main, ctx) {
  const cluster = await get("/api/v1/cluster");
  const f = form(cluster);
  const message = h("p", { hidden: true });
  const preview = h("section", { class: "preview", "aria-live": "polite", "aria-labelledby": "preview-title" });
  const previewButton = h("button", { type: "button", class: "secondary" }, "Preview placement");
  const deployButton = h("button", { type: "submit" }, "Deploy");

  // Both buttons read the spec from the form, then send it; each error is
  // shown under the form, and the button is usable again afterwards.
  const withSpec = (button, action) => async () => {
    note(message, null);
    let spec;
    try {
      spec = f.spec();
    } catch (e) {
      return note(message, e);
    }
    button.disabled = true;
    try {
      await action(spec);
    } catch (e) {
      note(message, e);
    } finally {
      button.disabled = false;
    }
  };
  previewButton.addEventListener("click", withSpec(previewButton, async (spec) => {
    fill(preview, h("p", { class: "muted" }, "Reading the model's metadata and planning…"));
    try {
      showPlan(preview, await post("/api/v1/models:plan", spec));
    } catch (e) {
      fill(preview);
      throw e;
    }
  }));
  const deploy = withSpec(deployButton, async (spec) => {
    const model = await post("/api/v1/models", spec);
    toast(`${model.name} deployed.`);
    ctx.go(`#/models/${model.id}`);
  });
  f.el.addEventListener("submit", (event) => {
    event.preventDefault();
    deploy();
  });
  f.el.append(message, h("div", { class: "actions" }, previewButton, deployButton));
  main.append(h("h1", {}, "Deploy a model"), h("div", { class: "split" }, f.el, preview));
}

function form(cluster) {
  const name = h("input", { name: "name", required: true, placeholder: "e.g. qwen2.5-7b", autocomplete: "off" });
  const kind = h("select", { name: "source" },
    h("option", { value: "huggingface" }, "Hugging Face"),
    h("option", { value: "modelscope" }, "ModelScope"),
    h("option", { value: "local" }, "A path on the worker"));
  const repo = h("input", { name: "repo", placeholder: "owner/name", autocomplete: "off" });
  const file = h("input", { name: "filename", placeholder: "e.g. *Q4_K_M.gguf (GGUF only)", autocomplete: "off" });
  const revision = h("input", { name: "revision", placeholder: "main", autocomplete: "off" });
  const path = h("input", { name: "path", placeholder: "/models/model.gguf or a model directory", autocomplete: "off" });
  const repoField = field("Repository", repo);
  const fileField = field("File", file, "A .gguf file or glob runs on llama.cpp; leave empty for a checkpoint (vLLM).");
  const revisionField = field("Revision", revision);
  const pathField = field("Path", path, "Absolute, on the worker that will run it.");

  const backend = h("select", { name: "backend" },
    h("option", { value: "auto" }, "auto"),
    h("option", { value: "llama.cpp" }, "llama.cpp"),
    h("option", { value: "vllm" }, "vLLM"));
  const resolved = h("output", { class: "hint", for: backend.id });
  const version = h("input", { name: "backend_version", placeholder: "the default version", autocomplete: "off" });
  const replicas = h("input", { name: "replicas", type: "number", min: 0, max: 1000, value: 1 });
  const strategy = h("select", { name: "placement_strategy" },
    h("option", { value: "spread" }, "spread"), h("option", { value: "binpack" }, "binpack"));
  const selector = h("textarea", { name: "worker_selector", rows: 2, placeholder: "label=value, one per line" });
  let selectorTouched = false;
  selector.addEventListener("input", () => { selectorTouched = true; });

  const gpus = cluster.workers.flatMap((w) => w.gpus.map((g) => ({ id: `${w.name}:${g.index}`, w, g })));
  const gpuBoxes = gpus.map(({ id, g }) => {
    const c = checkbox(`${id} — ${g.name}, ${bytes(g.total)}${g.simulated ? " (simulated)" : ""}`, false);
    c.box.value = id;
    return c;
  });
  const gpuField = h("fieldset", {}, h("legend", {}, "GPUs"),
    gpuBoxes.length ? gpuBoxes.map((c) => c.el) : h("p", { class: "muted" }, "No worker reports a GPU."),
    h("span", { class: "hint" }, "None ticked: any GPU the placement picks."));

  const offload = checkbox("CPU offloading", true, "Layers that do not fit on GPUs run on the CPU (llama.cpp).");
  const distributed = checkbox("Distributed inference", true, "Split over several workers with rpc-servers (llama.cpp).");
  const restart = checkbox("Restart on error", true);
  const categories = CATEGORIES.map((c) => {
    const box = checkbox(c, false);
    box.box.value = c;
    return box;
  });
  const params = h("textarea", { name: "backend_parameters", rows: 3, placeholder: "--ctx-size=4096\n--flash-attn on" });
  const env = h("textarea", { name: "env", rows: 2, placeholder: "NAME=value, one per line" });

  function backendNow() {
    if (backend.value !== "auto") return backend.value;
    const name = kind.value === "local" ? path.value : file.value;
    return name.trim().toLowerCase().endsWith(".gguf") ? "llama.cpp" : "vllm";
  }
  function update() {
    const local = kind.value === "local";
    repoField.hidden = local;
    fileField.hidden = local;
    revisionField.hidden = local;
    pathField.hidden = !local;
    repo.placeholder = kind.value === "modelscope" ? "owner/name (ModelScope model id)" : "owner/name";
    const b = backendNow();
    resolved.textContent = backend.value === "auto"
      ? `auto resolves to ${b}: ${b === "llama.cpp" ? "the source names a .gguf file" : "the source is not a GGUF file"}.`
      : `runs on ${b}.`;
    if (!selectorTouched) selector.value = b === "vllm" ? VLLM_DEFAULT : "";
    offload.el.hidden = b !== "llama.cpp";
    distributed.el.hidden = b !== "llama.cpp";
  }
  for (const el of [kind, backend, file, path]) el.addEventListener("input", update);
  update();

  const el = h("form", { class: "card", "aria-label": "Model spec" },
    field("Name", name, "The model id clients send (letters, digits, . _ - : /)."),
    field("Source", kind), repoField, fileField, revisionField, pathField,
    field("Backend", backend), resolved,
    field("Backend version", version),
    h("div", { class: "two" }, field("Replicas", replicas), field("Placement", strategy)),
    field("Worker selector", selector,
      "Labels a worker must have. vLLM's default is shown; empty means any worker."),
    gpuField,
    h("fieldset", {}, h("legend", {}, "Options"), offload.el, distributed.el, restart.el),
    h("fieldset", {}, h("legend", {}, "Categories"), categories.map((c) => c.el),
      h("span", { class: "hint" }, "None ticked: an LLM (vision is found by itself).")),
    field("Backend parameters", params, "One per line, appended to the launch command last."),
    field("Environment", env, "NAME=value, one per line."),
  );

  function spec() {
    const sourceSpec = kind.value === "local"
      ? { type: "local", path: path.value.trim() }
      : {
        type: kind.value,
        [kind.value === "huggingface" ? "repo_id" : "model_id"]: repo.value.trim(),
        ...(file.value.trim() ? { filename: file.value.trim() } : {}),
        ...(revision.value.trim() ? { revision: revision.value.trim() } : {}),
      };
    const out = {
      name: name.value.trim(),
      source: sourceSpec,
      backend: backend.value,
      replicas: Number(replicas.value),
      placement_strategy: strategy.value,
      worker_selector: pairs(selector.value, "worker selector"),
      gpu_selector: gpuBoxes.filter((c) => c.box.checked).map((c) => c.box.value),
      cpu_offloading: offload.box.checked,
      distributed_inference: distributed.box.checked,
      restart_on_error: restart.box.checked,
      categories: categories.filter((c) => c.box.checked).map((c) => c.box.value),
      backend_parameters: params.value.split("\n").map((l) => l.trim()).filter(Boolean),
      env: pairs(env.value, "environment"),
    };
    if (version.value.trim()) out.backend_version = version.value.trim();
    if (!out.name) throw new Error("Give the model a name: it is the id clients send.");
    return out;
  }
  return { el, spec };
}

/** "a=b" lines as an object; a line without "=" is refused by name. */
function pairs(text, what) {
  const out = {};
  for (const [n, raw] of text.split("\n").entries()) {
    const line = raw.trim();
    if (!line) continue;
    const at = line.indexOf("=");
    if (at < 1) throw new Error(`Line ${n + 1} of the ${what} is not NAME=value: “${line}”.`);
    out[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  }
  return out;
}

function showPlan(el, plan) {
  const e = plan.estimate;
  fill(el,
    h("h2", { id: "preview-title" }, "Preview"),
    h("p", { class: `note ${plan.fits ? "good" : "error"}`, role: plan.fits ? "status" : "alert" },
      plan.fits ? `Fits: ${plan.message}` : `Does not fit: ${plan.message}`),
    h("dl", { class: "facts" },
      h("dt", {}, "Backend"), h("dd", {}, plan.backend),
      h("dt", {}, "Categories"), h("dd", {}, plan.categories.join(", ") || "llm"),
      e.download_bytes ? [h("dt", {}, "Download"), h("dd", {}, bytes(e.download_bytes))] : null),
    plan.fits ? table(
      ["Worker", "Device", "Weights", "KV cache", "Compute", "Other", "Total"],
      plan.devices.map((d) => [d.worker_name, d.gpu === null ? "RAM" : `GPU ${d.gpu}`,
        bytes(d.weights), bytes(d.kv_cache), bytes(d.compute), bytes(d.other), bytes(d.total)]),
      "Memory per device") : null,
    plan.reasons.length ? [h("h3", {}, "Why each worker refused"),
      h("ul", { class: "reasons" }, plan.reasons.map((r) => h("li", {}, r)))] : null,
    h("h3", {}, "Estimate"), estimate(e),
    plan.command ? [h("h3", {}, "Launch command"), h("pre", { class: "command" }, plan.command.join(" "))] : null);
}

const LABELS = {
  weights: "weights", kv_cache: "KV cache", compute: "compute", total: "total", ram: "host RAM",
  all_layers_on_one_gpu: "all layers on one GPU", cpu_only_ram: "CPU only: RAM",
  projector_bytes: "projector", download_bytes: "download", per_gpu_need: "need per GPU",
  vision_weights: "vision weights", encoder_activation: "encoder activations", kv_bytes_per_token: "KV per token",
};

function estimate(e) {
  const isBytes = (k) => /bytes|weights|kv_cache|compute|total|ram|need|activation|^\d+$/.test(k);
  const rows = [];
  for (const [k, v] of Object.entries(e)) {
    if (v === null || v === undefined || v === false || k === "download_bytes") continue;
    const label = LABELS[k] || k.replaceAll("_", " ");
    if (typeof v === "object" && !Array.isArray(v)) {
      const name = (kk) => (k === "per_gpu_need" ? `tensor-parallel ${kk}:` : LABELS[kk] || kk);
      rows.push(h("dt", {}, label), h("dd", {}, Object.entries(v).map(([kk, vv]) =>
        `${name(kk)} ${isBytes(kk) || isBytes(k) ? bytes(vv) : vv}`).join(" · ")));
    } else {
      rows.push(h("dt", {}, label), h("dd", {}, Array.isArray(v) ? v.join(", ")
        : typeof v === "number" && isBytes(k) && k !== "gpu_memory_utilization" ? bytes(v) : String(v)));
    }
  }
  return h("dl", { class: "facts" }, rows);
}
