// Sign in: the server keeps the session in an HttpOnly cookie.
import { post } from "../api.js";
import { field, h, note } from "../dom.js";

export function render(main, ctx) {
  const username = h("input", { name: "username", autocomplete: "username", required: true });
  const password = h("input", {
    name: "password", type: "password", autocomplete: "current-password", required: true,
  });
  const message = h("p", { hidden: true });
  const button = h("button", { type: "submit" }, "Sign in");
  const form = h("form", { class: "card narrow", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title" }, "Sign in to corral"),
    field("Username", username),
    field("Password", password),
    message,
    h("div", { class: "actions" }, button));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    note(message, null);
    button.disabled = true;
    try {
      const session = await post("/api/v1/auth/login", {
        username: username.value, password: password.value, cookie: true,
      });
      await ctx.signedIn(session.user);
    } catch (e) {
      note(message, e);
      password.select();
    } finally {
      button.disabled = false;
    }
  });
  main.append(form);
  username.focus();
}
