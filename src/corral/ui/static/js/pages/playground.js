// The playground: chat with a running model (streamed token by token, with
// images for vision models) and embeddings, through the same OpenAI
// endpoint as every client (/v1), signed in by the session cookie.
import { CSRF, failure, get } from "../api.js";
import { field, fill, h, note } from "../dom.js";

const MAX_IMAGE_BYTES = 20 * 1024 * 1024;

export async function render(main) {
  const models = (await get("/v1/models")).data;
  main.append(h("h1", {}, "Playground"));
  if (!models.length) {
    main.append(h("p", { class: "card" }, "No model is running yet. Deploy one, or wait until one is running; it then shows here."));
    return;
  }
  const chatModels = models.filter((m) => !m.categories.some((c) => c === "embedding" || c === "reranker"));
  const embedModels = models.filter((m) => m.categories.includes("embedding"));
  const panels = {
    chat: chatPanel(chatModels.length ? chatModels : models),
    embeddings: embeddingsPanel(embedModels.length ? embedModels : models),
  };
  const tabs = Object.keys(panels).map((name) => h("button", {
    type: "button", role: "tab", id: `tab-${name}`, "aria-controls": `panel-${name}`,
    onclick: () => select(name),
  }, name === "chat" ? "Chat" : "Embeddings"));
  function select(name) {
    for (const tab of tabs) {
      const on = tab.id === `tab-${name}`;
      tab.setAttribute("aria-selected", String(on));
      tab.tabIndex = on ? 0 : -1;
    }
    for (const [n, panel] of Object.entries(panels)) panel.el.hidden = n !== name;
  }
  const tablist = h("div", { role: "tablist", class: "tabs", "aria-label": "Playground mode" }, tabs);
  tablist.addEventListener("keydown", (event) => {
    if (event.key !== "ArrowRight" && event.key !== "ArrowLeft") return;
    const at = tabs.indexOf(document.activeElement);
    const next = tabs[(at + (event.key === "ArrowRight" ? 1 : tabs.length - 1)) % tabs.length];
    next.focus();
    next.click();
  });
  main.append(tablist, ...Object.values(panels).map((p) => p.el));
  select("chat");
  return () => Object.values(panels).forEach((p) => p.stop());
}

function modelSelect(models) {
  return h("select", { name: "model" }, models.map((m) => h("option", { value: m.id }, m.id)));
}

function chatPanel(models) {
  const model = modelSelect(models);
  const system = h("textarea", { rows: 2, placeholder: "You are a helpful assistant." });
  const temperature = h("input", { type: "number", min: 0, max: 2, step: 0.1, value: 0.7, class: "small" });
  const topP = h("input", { type: "number", min: 0, max: 1, step: 0.05, value: 1, class: "small" });
  const maxTokens = h("input", { type: "number", min: 1, max: 32768, value: 256, class: "small" });
  // Not a live region: reading every token aloud would drown the user; the
  // stats line (live) says when an answer is complete.
  const log = h("div", { class: "chat", role: "log", "aria-live": "off", "aria-label": "Conversation" });
  const input = h("textarea", { rows: 3, placeholder: "Ask something…", name: "prompt" });
  const images = h("input", { type: "file", accept: "image/png,image/jpeg,image/webp,image/gif", multiple: true });
  const imageField = field("Images", images, "For vision models: sent with your next message.");
  const thumbs = h("div", { class: "thumbs" });
  const stats = h("p", { class: "stats muted", "aria-live": "polite" });
  const message = h("p", { hidden: true });
  const sendButton = h("button", { type: "submit" }, "Send");
  const stopButton = h("button", { type: "button", class: "secondary", disabled: true }, "Stop");
  const clearButton = h("button", { type: "button", class: "secondary" }, "New chat");
  const history = [];
  let attached = [];
  let controller = null;
  let conversation = 0; // "New chat" starts another; a late answer must not land in it

  function vision() {
    return models.find((m) => m.id === model.value)?.categories.includes("vision");
  }
  function updateVision() {
    imageField.hidden = !vision();
    if (!vision()) {
      attached = [];
      fill(thumbs);
    }
  }
  model.addEventListener("change", updateVision);
  updateVision();

  images.addEventListener("change", async () => {
    note(message, null);
    for (const file of images.files) {
      if (file.size > MAX_IMAGE_BYTES) {
        note(message, `${file.name} is larger than 20 MiB; pick a smaller image.`);
        continue;
      }
      const url = await new Promise((resolve, reject) => {
        const reader = new FileReader();
        reader.onload = () => resolve(reader.result);
        reader.onerror = () => reject(new Error(`Could not read ${file.name}.`));
        reader.readAsDataURL(file);
      });
      attached.push({ name: file.name, url });
    }
    images.value = "";
    fill(thumbs, attached.map((a) => h("img", { src: a.url, alt: a.name, title: a.name })));
  });

  function bubble(role, text, pictures = []) {
    const body = h("div", { class: "text" }, text);
    const el = h("div", { class: `msg ${role}` }, h("span", { class: "who" }, role === "user" ? "You" : "Model"),
      pictures.map((p) => h("img", { src: p.url, alt: p.name })), body);
    log.append(el);
    log.scrollTop = log.scrollHeight;
    return body;
  }

  const form = h("form", { class: "card" },
    h("div", { class: "two" }, field("Model", model), field("System prompt", system)),
    h("div", { class: "three" }, field("Temperature", temperature), field("Top p", topP), field("Max tokens", maxTokens)),
    log,
    field("Message", input, "Enter sends; Shift+Enter starts a new line."),
    imageField, thumbs, message, stats,
    h("div", { class: "actions" }, clearButton, stopButton, sendButton));

  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  clearButton.addEventListener("click", () => {
    conversation += 1;
    controller?.abort();
    history.length = 0;
    fill(log);
    stats.textContent = "";
  });
  stopButton.addEventListener("click", () => controller?.abort());

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (controller || (!text && !attached.length)) return; // one answer at a time
    note(message, null);
    const mine = conversation;
    const content = attached.length
      ? [{ type: "text", text }, ...attached.map((a) => ({ type: "image_url", image_url: { url: a.url } }))]
      : text;
    history.push({ role: "user", content });
    bubble("user", text, attached);
    attached = [];
    fill(thumbs);
    input.value = "";
    const answer = bubble("assistant", "");
    answer.classList.add("streaming");
    const messages = [
      ...(system.value.trim() ? [{ role: "system", content: system.value.trim() }] : []),
      ...history,
    ];
    controller = new AbortController();
    sendButton.disabled = true;
    stopButton.disabled = false;
    stats.textContent = "Waiting for the first token…";
    const started = performance.now();
    let first = null;
    let usage = null;
    let chunks = 0;
    try {
      const response = await fetch("/v1/chat/completions", {
        method: "POST",
        headers: { ...CSRF, "Content-Type": "application/json" },
        body: JSON.stringify({
          model: model.value, messages, stream: true, stream_options: { include_usage: true },
          temperature: Number(temperature.value), top_p: Number(topP.value), max_tokens: Number(maxTokens.value),
        }),
        signal: controller.signal,
      });
      if (!response.ok) throw await failure(response);
      let finished = false;
      for await (const data of events(response, () => { finished = true; })) {
        if (data.error) throw new Error(data.error.message || "The model reported an error.");
        const delta = data.choices?.[0]?.delta?.content;
        if (delta) {
          if (first === null) first = performance.now();
          chunks += 1;
          answer.append(delta);
          answer.dataset.chunks = String(chunks); // how many pieces arrived, for tests
          log.scrollTop = log.scrollHeight;
        }
        if (data.usage) usage = data.usage;
      }
      if (!finished) throw new Error("The answer stopped before the model finished (the engine may have stopped); the text so far is kept.");
      if (mine === conversation) history.push({ role: "assistant", content: answer.textContent });
    } catch (e) {
      if (mine !== conversation) {
        // "New chat" was pressed: this answer belongs to a cleared conversation.
      } else if (e.name === "AbortError" || answer.textContent) {
        history.push({ role: "assistant", content: answer.textContent });
        answer.parentElement.append(h("span", { class: "hint" }, e.name === "AbortError" ? "stopped" : "incomplete"));
        if (e.name !== "AbortError") note(message, e);
      } else {
        history.pop();
        answer.parentElement.remove();
        note(message, e);
      }
    } finally {
      answer.classList.remove("streaming");
      sendButton.disabled = false;
      stopButton.disabled = true;
      controller = null;
      const total = (performance.now() - started) / 1000;
      const parts = [];
      if (first !== null) parts.push(`time to first token ${Math.round(first - started)} ms`);
      if (usage) {
        parts.push(`${usage.prompt_tokens} prompt + ${usage.completion_tokens} completion tokens`);
        if (first !== null && usage.completion_tokens > 1) {
          const rate = (usage.completion_tokens - 1) / Math.max((performance.now() - first) / 1000, 1e-3);
          parts.push(`${rate.toFixed(1)} tokens/s`);
        }
      } else if (chunks) {
        parts.push(`${chunks} chunks`);
      }
      parts.push(`${total.toFixed(2)} s in all`);
      stats.textContent = parts.join(" · ");
      input.focus();
    }
  });
  return { el: h("div", { role: "tabpanel", id: "panel-chat", "aria-labelledby": "tab-chat" }, form), stop: () => controller?.abort() };
}

/**
 * The JSON payloads of a server-sent event stream; `done()` is called at
 * `[DONE]`. Lines may end in CRLF (engines differ); an `error` event's
 * payload is yielded like any other (it carries `error`).
 */
async function* events(response, done) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  const parse = function* (block) {
    const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
    if (!data) return;
    if (data === "[DONE]") {
      done();
      return;
    }
    yield JSON.parse(data);
  };
  for (;;) {
    const { value, done: ended } = await reader.read();
    if (ended) {
      yield* parse(buffer.replace(/\r\n?/g, "\n"));
      return;
    }
    // A CR at the end may be half of a CRLF: keep it for the next piece.
    buffer = (buffer + value).replace(/\r\n/g, "\n").replace(/\r(?=.)/gs, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      yield* parse(block);
    }
  }
}

function embeddingsPanel(models) {
  const model = modelSelect(models);
  const input = h("textarea", { rows: 4, placeholder: "One text per line" });
  const result = h("div", { "aria-live": "polite" });
  const message = h("p", { hidden: true });
  const button = h("button", { type: "submit" }, "Embed");
  let controller = null;
  const form = h("form", { class: "card" }, field("Model", model), field("Texts", input, "One input per line."),
    message, h("div", { class: "actions" }, button), result);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    note(message, null);
    const texts = input.value.split("\n").map((l) => l.trim()).filter(Boolean);
    if (!texts.length) return note(message, "Type at least one text to embed.");
    controller = new AbortController();
    button.disabled = true;
    const started = performance.now();
    try {
      const response = await fetch("/v1/embeddings", {
        method: "POST",
        headers: { ...CSRF, "Content-Type": "application/json" },
        body: JSON.stringify({ model: model.value, input: texts }),
        signal: controller.signal,
      });
      if (!response.ok) throw await failure(response);
      const body = await response.json();
      const ms = Math.round(performance.now() - started);
      fill(result,
        h("p", { class: "stats" }, `${body.data.length} vector(s) of ${body.data[0]?.embedding.length ?? 0} dimensions · ${body.usage?.prompt_tokens ?? "?"} tokens · ${ms} ms`),
        h("ol", { class: "vectors" }, body.data.map((d, i) => h("li", {},
          h("strong", {}, texts[i]), ": [", d.embedding.slice(0, 6).map((x) => x.toFixed(4)).join(", "), ", …]"))));
    } catch (e) {
      if (e.name !== "AbortError") note(message, e);
    } finally {
      button.disabled = false;
    }
  });
  return { el: h("div", { role: "tabpanel", id: "panel-embeddings", "aria-labelledby": "tab-embeddings" }, form), stop: () => controller?.abort() };
}
