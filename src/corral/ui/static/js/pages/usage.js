// Usage: tokens per model per day as a chart, and totals. Users see their
// own; admins everyone's, or one user's.
import { get } from "../api.js";
import { field, fill, h, hue, note, table } from "../dom.js";

const SVG = "http://www.w3.org/2000/svg";

function day(offset) {
  const d = new Date(Date.now() + offset * 86400e3);
  return d.toISOString().slice(0, 10);
}

export async function render(main, ctx) {
  const start = h("input", { type: "date", value: day(-13) });
  const end = h("input", { type: "date", value: day(0) });
  const user = h("select", {}, h("option", { value: "" }, "All users"));
  if (ctx.isAdmin) {
    for (const u of (await get("/api/v1/users")).items) user.append(h("option", { value: u.id }, u.username));
  }
  const message = h("p", { hidden: true });
  const chart = h("div", { class: "chart card" });
  const totals = h("div");
  async function refresh() {
    note(message, null);
    try {
      const params = new URLSearchParams({ start: start.value, end: end.value });
      params.append("group_by", "day");
      params.append("group_by", "model");
      if (user.value) params.set("user_id", user.value);
      const report = await get(`/api/v1/usage?${params}`);
      draw(chart, report.items, start.value, end.value);
      const byModel = {};
      for (const r of report.items) {
        const t = (byModel[r.model] ??= { requests: 0, prompt: 0, completion: 0 });
        t.requests += r.requests;
        t.prompt += r.prompt_tokens;
        t.completion += r.completion_tokens;
      }
      const parts = [table(["Model", "Requests", "Prompt tokens", "Completion tokens"],
        Object.entries(byModel).map(([m, t]) => [m, t.requests, t.prompt, t.completion]), "Per model")];
      if (ctx.isAdmin && !user.value) {
        const params2 = new URLSearchParams({ start: start.value, end: end.value, group_by: "user" });
        const perUser = await get(`/api/v1/usage?${params2}`);
        parts.push(table(["User", "Requests", "Prompt tokens", "Completion tokens"],
          perUser.items.map((r) => [r.username ?? `user ${r.user_id}`, r.requests, r.prompt_tokens, r.completion_tokens]), "Per user"));
      }
      parts.push(h("p", { class: "muted" },
        `In all: ${report.total.requests} requests, ${report.total.total_tokens} tokens.`));
      fill(totals, parts);
    } catch (e) {
      note(message, e);
    }
  }
  for (const el of [start, end, user]) el.addEventListener("change", refresh);
  main.append(h("h1", {}, "Usage"),
    h("div", { class: "card filters" }, field("From", start), field("To (included)", end),
      ctx.isAdmin ? field("User", user) : null),
    message, chart, totals);
  await refresh();
}

/** Stacked bars: one per day, a block per model, height = tokens. */
function draw(el, rows, first, last) {
  const days = [];
  for (let d = new Date(`${first}T00:00:00Z`); d <= new Date(`${last}T00:00:00Z`); d = new Date(d.getTime() + 86400e3)) {
    days.push(d.toISOString().slice(0, 10));
  }
  if (!days.length || days.length > 366) {
    fill(el, h("p", { class: "muted" }, "Pick a range of 1 to 366 days."));
    return;
  }
  const models = [...new Set(rows.map((r) => r.model))].sort();
  const perDay = Object.fromEntries(days.map((d) => [d, {}]));
  for (const r of rows) if (perDay[r.day]) perDay[r.day][r.model] = (perDay[r.day][r.model] || 0) + r.total_tokens;
  const peak = Math.max(1, ...days.map((d) => Object.values(perDay[d]).reduce((a, b) => a + b, 0)));
  const W = 720, H = 220, left = 48, bottom = 28;
  const bar = (W - left) / days.length;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("role", "img");
  const total = rows.reduce((a, r) => a + r.total_tokens, 0);
  svg.setAttribute("aria-label", `Tokens per day from ${first} to ${last}: ${total} in all, ${models.length} model(s).`);
  const text = (x, y, s, anchor = "middle") => {
    const t = document.createElementNS(SVG, "text");
    t.setAttribute("x", x);
    t.setAttribute("y", y);
    t.setAttribute("text-anchor", anchor);
    t.textContent = s;
    svg.append(t);
  };
  text(left - 6, 12, String(peak), "end");
  text(left - 6, H - bottom, "0", "end");
  days.forEach((d, i) => {
    let y = H - bottom;
    for (const m of models) {
      const v = perDay[d][m] || 0;
      if (!v) continue;
      const height = ((H - bottom - 8) * v) / peak;
      y -= height;
      const r = document.createElementNS(SVG, "rect");
      r.setAttribute("x", left + i * bar + 2);
      r.setAttribute("y", y);
      r.setAttribute("width", Math.max(bar - 4, 1));
      r.setAttribute("height", height);
      r.setAttribute("fill", hue(m));
      const title = document.createElementNS(SVG, "title");
      title.textContent = `${d} · ${m}: ${v} tokens`;
      r.append(title);
      svg.append(r);
    }
    if (days.length <= 16 || i % Math.ceil(days.length / 12) === 0) text(left + i * bar + bar / 2, H - 10, d.slice(5));
  });
  fill(el, h("h2", {}, "Tokens per day"), svg, models.length
    ? h("ul", { class: "legend" }, models.map((m) => h("li", {}, h("span", { class: "swatch", style: { background: hue(m) } }), m)))
    : h("p", { class: "muted" }, "No requests in this range."));
}
