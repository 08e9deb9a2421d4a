// Change one's own password; the first admin must, when corral generated it.
import { post } from "../api.js";
import { field, h, note, toast } from "../dom.js";

export function render(main, ctx) {
  const forced = ctx.me.password_change_required;
  const current = h("input", { type: "password", autocomplete: "current-password", required: true });
  const fresh = h("input", {
    type: "password", autocomplete: "new-password", required: true, minlength: 8,
  });
  const again = h("input", { type: "password", autocomplete: "new-password", required: true });
  const message = h("p", { hidden: true });
  const button = h("button", { type: "submit" }, "Change password");
  const form = h("form", { class: "card narrow", "aria-labelledby": "pw-title" },
    h("h1", { id: "pw-title" }, "Change your password"),
    forced ? h("p", { class: "note warn" },
      "This account still has the password corral generated at first start. " +
      "Choose your own before going on.") : null,
    field("Current password", current),
    field("New password", fresh, "At least 8 characters."),
    field("New password again", again),
    message,
    h("div", { class: "actions" }, button));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    note(message, null);
    if (fresh.value !== again.value) {
      note(message, "The two new passwords differ; type the same one twice.");
      again.focus();
      return;
    }
    button.disabled = true;
    try {
      const user = await post("/api/v1/users/me/password", {
        current_password: current.value, new_password: fresh.value,
      }, { keepSession: true });
      toast("Password changed.");
      ctx.passwordChanged(user);
    } catch (e) {
      note(message, e);
    } finally {
      button.disabled = false;
    }
  });
  main.append(form);
  current.focus();
}
