/* dcopt view: the parameter form of a step that takes parameters (a patch's parameters, a pass's
 * options), from the fields the server describes (dcopt/view/step_params.py): a select for a
 * bool or a choice, a text field otherwise, each holding its default until edited. values()
 * gives every field's text; the server drops those equal to the default, so an untouched form
 * is the plain step. */
(function () {
  "use strict";

  function field(p) {
    let input;
    if (p.bool || p.choices) {
      const options = p.bool ? ["true", "false"] : p.choices;
      input = document.createElement("select");
      if (p.required) input.append(new Option("(choose)", ""));
      for (const o of options) input.append(new Option(o, o, false, o === p.default));
    } else {
      input = document.createElement("input");
      input.type = "text";
      input.value = p.default === null ? "" : p.default;
      input.placeholder = p.required ? "required" : p.default;
    }
    input.name = p.name;
    input.dataset.default = p.default === null ? "" : p.default;
    const label = document.createElement("label");
    label.className = "param";
    const name = document.createElement("span");
    name.className = "param-name";
    name.textContent = p.name;
    const type = document.createElement("span");
    type.className = "muted";
    const kind = p.choices ? (p.type.startsWith("list") ? "list of choices" : "choice") : p.type;
    type.textContent = " " + kind + (p.required ? " (required)" : "") + (p.doc ? " · " + p.doc : "");
    label.append(name, type, input);
    label.title = p.type + (p.doc ? ": " + p.doc : "");
    return { label, input };
  }

  function form(params, open) {
    if (!params || !params.length) return null;
    const details = document.createElement("details");
    details.className = "params";
    details.open = !!open;
    const summary = document.createElement("summary");
    summary.textContent = `parameters (${params.length})`;
    details.append(summary);
    const fields = params.map(field);
    for (const f of fields) details.append(f.label);
    const values = () => {
      const out = {};
      for (const f of fields) if (f.input.value !== "") out[f.input.name] = f.input.value;
      return out;
    };
    return { element: details, values };
  }

  window.dcoptForms = { form };
})();
