// The shell: who is signed in, the navigation, and which page shows.
// Pages are modules with `render(main, ctx)`; what it returns (a function)
// is called when the page is left, to stop its polling and streams.

import { get, post } from "./api.js";
import { fill, h, toast } from "./dom.js";

const PAGES = {
  cluster: { title: "Cluster", admin: true, load: () => import("./pages/cluster.js") },
  models: { title: "Models", load: () => import("./pages/models.js") },
  instances: { title: "Instance", admin: true, hidden: true, load: () => import("./pages/instance.js") },
  deploy: { title: "Deploy", admin: true, load: () => import("./pages/deploy.js") },
  playground: { title: "Playground", load: () => import("./pages/playground.js") },
  keys: { title: "API keys", load: () => import("./pages/keys.js") },
  usage: { title: "Usage", load: () => import("./pages/usage.js") },
  password: { title: "Change password", hidden: true, load: () => import("./pages/password.js") },
  signin: { title: "Sign in", hidden: true, open: true, load: () => import("./pages/signin.js") },
};

const main = document.getElementById("main");
let me = null;
let leave = null;
let visit = 0; // counts navigations, so a slow page load can tell it was left

const ctx = {
  get me() { return me; },
  get isAdmin() { return me?.role === "admin"; },
  go(hash) {
    if (location.hash === hash) route();
    else location.hash = hash;
  },
  async signedIn(user) {
    me = user;
    shell();
    ctx.go(user.password_change_required ? "#/password" : home());
  },
  async signOut() {
    try {
      await post("/api/v1/auth/logout");
    } catch {
      // the session may be gone already; the page forgets it either way
    }
    me = null;
    shell();
    ctx.go("#/signin");
    toast("Signed out.");
  },
  passwordChanged(user) {
    me = user;
    shell();
    ctx.go(home());
  },
};

function home() {
  return ctx.isAdmin ? "#/cluster" : "#/models";
}

function shell() {
  const nav = document.getElementById("nav");
  const who = document.getElementById("who");
  if (!me || me.password_change_required) {
    fill(nav);
    fill(who, me ? h("button", { class: "link", onclick: ctx.signOut }, "Sign out") : null);
    return;
  }
  const links = Object.entries(PAGES)
    .filter(([, page]) => !page.hidden && (!page.admin || ctx.isAdmin))
    .map(([name, page]) => h("a", { href: `#/${name}`, dataset: { page: name } }, page.title));
  fill(nav, links);
  fill(who,
    h("span", { class: "muted" }, `${me.username} (${me.role})`),
    h("a", { href: "#/password" }, "Password"),
    h("button", { class: "link", onclick: ctx.signOut }, "Sign out"));
}

async function route() {
  // In-page anchors are not pages: keep the page shown (or show home).
  if (location.hash && !location.hash.startsWith("#/")) {
    if (visit === 0) ctx.go("#/");
    return;
  }
  const [name = "", ...rest] = location.hash.replace(/^#\/?/, "").split("/");
  if (!me && name !== "signin") return ctx.go("#/signin");
  if (me && (name === "" || name === "signin")) return ctx.go(home());
  if (me?.password_change_required && name !== "password") return ctx.go("#/password");
  const page = PAGES[name];
  const mine = ++visit;
  if (leave) {
    leave();
    leave = null;
  }
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.dataset.page === name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (!page) {
    fill(main, h("h1", {}, "Not found"), h("p", {}, "There is no such page. "), h("a", { href: home() }, "Go back."));
    return;
  }
  if (page.admin && !ctx.isAdmin) {
    fill(main, h("h1", {}, page.title), h("p", { class: "note error" }, "This page is for admins."));
    return;
  }
  document.title = `${page.title} · corral`;
  fill(main, h("p", { class: "muted" }, "Loading…"));
  try {
    const module = await page.load();
    if (mine !== visit) return;
    const here = h("div");
    fill(main, here);
    const stop = (await module.render(here, ctx, rest)) || null;
    if (mine !== visit) {
      // Left while it loaded: stop what it started, and drop what it drew.
      stop?.();
      here.remove();
      return;
    }
    leave = stop;
  } catch (e) {
    if (mine !== visit) return;
    fill(main, h("h1", {}, page.title), h("p", { class: "note error", role: "alert" }, e.message));
  }
  // Move focus to the new content (screen readers announce it), unless the
  // page already put it somewhere useful, such as the first field of a form.
  if (!main.contains(document.activeElement)) main.focus({ preventScroll: true });
}

function warnIfClear() {
  const loopback = ["localhost", "127.0.0.1", "[::1]"].includes(location.hostname);
  if (location.protocol === "http:" && !loopback) {
    const banner = document.getElementById("banner");
    banner.hidden = false;
    banner.textContent =
      "This connection is not encrypted: passwords and keys cross the network in the clear. " +
      "Serve corral behind HTTPS (see docs/ui.md).";
  }
}

window.addEventListener("hashchange", route);
document.querySelector(".skip").addEventListener("click", (event) => {
  event.preventDefault();
  main.focus();
});
window.addEventListener("corral:signed-out", () => {
  if (me) {
    me = null;
    shell();
    toast("Your session ended; please sign in again.");
    ctx.go("#/signin");
  }
});

warnIfClear();
try {
  me = await get("/api/v1/auth/me");
} catch {
  me = null;
}
shell();
route();
