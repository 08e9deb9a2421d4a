// Small helpers to build the page. Text always goes in as text (never as
// markup), so a model's answer or a user's input can never become HTML.

// Links and images point into the UI, to the web, or at image data; never
// at `javascript:` (the CSP would block it too: this is the first wall).
const SAFE_URL = /^(#|\/(?!\/)|https?:|data:image\/|blob:)/i;

/** An element: h("a", {href: "#/x", class: "c"}, "text", child, [more]). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "dataset") {
      Object.assign(el.dataset, value);
    } else if (name === "style" && typeof value === "object") {
      Object.assign(el.style, value);
    } else if ((name === "href" || name === "src") && !SAFE_URL.test(String(value))) {
      throw new Error(`refusing ${name}=${value}: not a page, web or image address`);
    } else if (value === true) {
      el.setAttribute(name, "");
    } else if (name in el && typeof value !== "string") {
      el[name] = value;
    } else {
      el.setAttribute(name, String(value));
    }
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/**
 * Rebuild `el` with `build()` without losing the keyboard focus: the
 * element that had it (found again by href, id or aria-label) gets it back.
 */
export function rebuild(el, build) {
  const focused = document.activeElement;
  const key = el.contains(focused) && focused !== el
    ? ["href", "id", "aria-label"].map((a) => [a, focused.getAttribute(a)]).find(([, v]) => v)
    : null;
  fill(el, build());
  if (key) {
    const again = [...el.querySelectorAll(`[${key[0]}]`)].find((x) => x.getAttribute(key[0]) === key[1]);
    again?.focus({ preventScroll: true });
  }
}

/** Replace an element's content. */
export function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

export function bytes(n) {
  if (n === null || n === undefined) return "–";
  let value = Number(n);
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const digits = unit === 0 || value >= 100 ? 0 : value >= 10 ? 1 : 2;
  return `${value.toFixed(digits)} ${UNITS[unit]}`;
}

export function when(iso) {
  if (!iso) return "–";
  return new Date(iso).toLocaleString();
}

export function ago(iso) {
  if (!iso) return "never";
  const s = Math.max(0, Math.round((Date.now() - new Date(iso).getTime()) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

/** A state as a badge whose colour says good, waiting or bad. */
export function badge(state) {
  const tone = {
    running: "good", ready: "good",
    error: "bad", unreachable: "bad", not_ready: "bad",
  }[state] || "wait";
  return h("span", { class: `badge ${tone}` }, state.replace("_", " "));
}

/** A stable colour for a name (instances in the memory bars). */
export function hue(name) {
  let n = 0;
  for (const c of name) n = (n * 31 + c.charCodeAt(0)) % 360;
  return `hsl(${n} 55% 42%)`;
}

export function table(headers, rows, caption) {
  return h("table", {},
    caption ? h("caption", {}, caption) : null,
    h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, rows.length
      ? rows.map((cells) => h("tr", {}, cells.map((c) => h("td", {}, c))))
      : h("tr", {}, h("td", { colspan: headers.length, class: "muted" }, "None."))),
  );
}

/** A labelled form field. */
export function field(label, control, hint) {
  const id = control.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  control.id = id;
  const hintEl = hint ? h("span", { class: "hint", id: `${id}-hint` }, hint) : null;
  if (hintEl) control.setAttribute("aria-describedby", hintEl.id);
  return h("div", { class: "field" }, h("label", { for: id }, label), control, hintEl);
}

export function checkbox(label, checked, hint) {
  const box = h("input", { type: "checkbox", checked });
  const id = `c-${Math.random().toString(36).slice(2, 9)}`;
  box.id = id;
  return {
    box,
    el: h("div", { class: "check" }, box, h("label", { for: id }, label),
      hint ? h("span", { class: "hint" }, hint) : null),
  };
}

/** A message line for errors and notes: `note(el, error)` shows a sentence. */
export function note(el, what, tone = "error") {
  if (!what) {
    el.hidden = true;
    el.textContent = "";
    return;
  }
  el.hidden = false;
  el.className = `note ${tone}`;
  el.setAttribute("role", tone === "error" ? "alert" : "status");
  el.textContent = what instanceof Error ? what.message : String(what);
}

export function toast(message) {
  const el = document.getElementById("toast");
  el.textContent = message;
  el.classList.add("shown");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => el.classList.remove("shown"), 4000);
}
