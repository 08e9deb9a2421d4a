// API keys: create one (its secret is shown once), list, revoke.
import { del, get, post } from "../api.js";
import { checkbox, field, fill, h, note, table, toast, when } from "../dom.js";

export async function render(main, ctx) {
  const name = h("input", { name: "key-name", required: true, maxlength: 64, placeholder: "e.g. laptop, ci", autocomplete: "off" });
  const days = h("input", { name: "key-days", type: "number", min: 1, max: 3650, placeholder: "never", class: "small" });
  const message = h("p", { hidden: true });
  const secret = h("div", { "aria-live": "polite" });
  const listMessage = h("p", { hidden: true });
  const list = h("div");
  const everyone = checkbox("Every user's keys", false);

  async function refresh() {
    note(listMessage, null);
    try {
      const query = everyone.box.checked ? "?all=true" : "";
      const keys = (await get(`/api/v1/api-keys${query}`)).items;
      fill(list, table(
        ["Name", "Id", ...(everyone.box.checked ? ["User"] : []), "Created", "Expires", ""],
        keys.map((k) => [k.name, h("code", {}, k.id), ...(everyone.box.checked ? [k.username] : []),
          when(k.created_at), k.expires_at ? when(k.expires_at) : "never", revoke(k)])));
    } catch (e) {
      note(listMessage, e);
    }
  }

  function revoke(k) {
    const button = h("button", { type: "button", class: "danger", "aria-label": `Revoke ${k.name}` }, "Revoke");
    button.addEventListener("click", async () => {
      if (button.dataset.sure !== "1") {
        button.dataset.sure = "1";
        button.textContent = "Click again to revoke";
        button.setAttribute("aria-label", `Really revoke ${k.name}? Press again`);
        return;
      }
      try {
        await del(`/api/v1/api-keys/${k.id}`);
        toast(`Key ${k.name} revoked; it no longer works.`);
        refresh();
      } catch (e) {
        note(listMessage, e);
      }
    });
    return button;
  }

  const form = h("form", { class: "card", "aria-labelledby": "new-key" },
    h("h2", { id: "new-key" }, "New key"),
    h("div", { class: "two" }, field("Name", name), field("Expires after (days)", days, "Empty: never.")),
    message, h("div", { class: "actions" }, h("button", { type: "submit" }, "Create key")), secret);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    note(message, null);
    const body = { name: name.value.trim() };
    if (days.value) body.expires_at = new Date(Date.now() + Number(days.value) * 86400e3).toISOString();
    try {
      const created = await post("/api/v1/api-keys", body);
      const value = h("input", { readonly: true, value: created.key, class: "secret", "aria-label": "The new key" });
      const copy = h("button", { type: "button", class: "secondary" }, "Copy");
      copy.addEventListener("click", async () => {
        value.select();
        try {
          await navigator.clipboard.writeText(created.key);
          toast("Copied.");
        } catch {
          toast("Copy it by hand: the text is selected.");
        }
      });
      fill(secret, h("div", { class: "note good" },
        h("p", {}, `Key ${created.name} created. Copy it now: corral shows it only once.`),
        h("div", { class: "row-actions" }, value, copy)));
      name.value = "";
      refresh();
    } catch (e) {
      note(message, e);
    }
  });
  everyone.box.addEventListener("change", refresh);
  main.append(h("h1", {}, "API keys"),
    h("p", { class: "muted" }, "Keys let programs use the OpenAI-compatible endpoint at ",
      h("code", {}, `${location.origin}/v1`), " as you."),
    form,
    h("section", { "aria-labelledby": "keys-title" },
      h("div", { class: "title-row" }, h("h2", { id: "keys-title" }, "Your keys"), ctx.isAdmin ? everyone.el : null),
      listMessage, list));
  await refresh();
}
