/* dcopt view: the page. Reads the session from the JSON API (live) or from window.DCOPT_DATA
 * (a static export), draws a stage's graph with cytoscape.js + dagre, and shows pass reports,
 * node details and (live only) the passes and patches that apply at a node. */
(function () {
  "use strict";
  const DATA = window.DCOPT_DATA || null;
  const STATIC = !!DATA;
  const state = {
    session: null, stage: 0, side: "after", selected: null, expandAll: false, expanded: new Set(),
    preview: null, payload: null, cache: new Map(), version: -1,
  };
  const timings = (window.dcoptTimings = { start: performance.now(), firstPaint: null, switches: [] });
  const $ = (sel) => document.querySelector(sel);
  const el = (tag, attrs, ...children) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else if (v !== undefined && v !== null) e.setAttribute(k, v);
    }
    for (const c of children.flat()) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
    return e;
  };
  const human = (n, unit = "") => {
    if (n === null || n === undefined) return "?";
    for (const [p, s] of [["G", 1e9], ["M", 1e6], ["k", 1e3]]) if (Math.abs(n) >= s) return (n / s).toFixed(2) + " " + p + unit;
    return n + (unit ? " " + unit : "");
  };

  // -- data access: the server, or the static file's precomputed answers ----------------------
  async function get(path, params) {
    if (STATIC) return staticGet(path, params);
    const url = path + (params ? "?" + new URLSearchParams(params) : "");
    const r = await fetch(url);
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || r.statusText);
    return body;
  }
  async function post(path, body) {
    const r = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body || {}) });
    const out = await r.json();
    if (!r.ok) throw new Error(out.error || r.statusText);
    return out;
  }
  function staticGet(path, p) {
    if (path === "/api/session") return DATA.session;
    if (path === "/api/stage") return DATA.stages[p.i];
    if (path === "/api/build") { if (DATA.build && DATA.build.ref === p.ref) return DATA.build; }
    if (path === "/api/run") { if (DATA.run && DATA.run.id === p.ref) return DATA.run; }
    if (path === "/api/node") {
      const info = JSON.parse(JSON.stringify(DATA.details[DATA.nodes[p.i][p.id]]));
      for (const k of info.kernels) if (k.source === undefined) k.source = DATA.sources[k.name || k.step] || "";
      return info;
    }
    throw new Error("not available in a static export: " + path);
  }
  async function stagePayload(i) {
    const key = state.version + ":" + i;
    if (!state.cache.has(key)) state.cache.set(key, await get("/api/stage", { i }));
    return state.cache.get(key);
  }

  // -- the graph -------------------------------------------------------------------------------
  let cy = null;
  const STYLE = [
    { selector: "node", style: {
      "shape": "round-rectangle", "background-color": "#e8eefc", "border-width": 1, "border-color": "#7d8fb8",
      "label": "data(display)", "text-wrap": "wrap", "text-valign": "center", "font-size": 10,
      "width": "data(w)", "height": "data(h)", "color": "#1d2330", "text-max-width": "180px" } },
    { selector: "node[kind = 'io']", style: { "shape": "ellipse", "background-color": "#f1f3f7", "border-style": "dashed" } },
    { selector: "node[kind = 'group']", style: { "background-color": "#e4f3ea", "border-color": "#4e9a6b" } },
    { selector: "node[kind = 'loop']", style: { "background-color": "#fdf1e2", "border-color": "#c08a3e" } },
    { selector: ":parent", style: { "text-valign": "top", "background-opacity": 0.35, "padding": "10px" } },
    { selector: "edge", style: { "width": 1.2, "line-color": "#a7b0c2", "target-arrow-color": "#a7b0c2",
      "target-arrow-shape": "triangle", "curve-style": "bezier", "arrow-scale": 0.8 } },
    { selector: ".added", style: { "border-width": 3, "border-color": "#2e8b57", "background-color": "#d3f0dc" } },
    { selector: ".rewired", style: { "border-width": 3, "border-color": "#d9822b", "background-color": "#fbe5c8" } },
    { selector: ".removed", style: { "border-width": 3, "border-color": "#c0392b", "background-color": "#f7d4d2" } },
    { selector: ".hit", style: { "border-width": 4, "border-color": "#3b6fe0" } },
    { selector: "node:selected", style: { "border-width": 4, "border-color": "#1d2330", "background-color": "#c9d6f7" } },
  ];

  function visible(node, expanded) {
    // a member shows when every group around it is expanded
    const parts = node.id.split("::");
    for (let i = 1; i < parts.length; i++) if (!expanded(parts.slice(0, i).join("::"))) return false;
    return true;
  }

  function elementsFor(payload, highlight) {
    const expanded = (gid) => state.expandAll || state.expanded.has(gid);
    const nodes = payload.elements.nodes.filter((n) => visible(n, expanded));
    const shown = new Set(nodes.map((n) => n.id));
    const classes = {};
    for (const [cls, ids] of Object.entries(highlight || {})) for (const id of ids) classes[id] = cls;
    const out = [];
    for (const n of nodes) {
      const display = n.kind === "io" ? n.op + ": " + n.label : (n.op === n.label ? n.label : n.op + "\n" + n.label);
      const lines = display.split("\n");
      const longest = Math.min(30, Math.max(...lines.map((l) => l.length)));
      const rows = lines.reduce((k, l) => k + Math.ceil(Math.max(1, l.length) / 30), 0);
      const data = Object.assign({}, n, { display, w: 16 + 6.1 * longest, h: 10 + 13 * rows });
      if (data.parent && !shown.has(data.parent)) delete data.parent;
      out.push({ group: "nodes", data, classes: classes[n.id] || "" });
    }
    for (const e of payload.elements.edges) {
      if (shown.has(e.source) && shown.has(e.target)) out.push({ group: "edges", data: e });
    }
    return out;
  }

  const layouts = new WeakMap();  // stage payload -> (groups expanded -> node positions)

  function draw(payload, highlight, keepViewport) {
    const t0 = performance.now();
    const elements = elementsFor(payload, highlight);
    const big = elements.length > 1200;
    if (!cy) {
      cy = cytoscape({ container: $("#cy"), style: STYLE, minZoom: 0.02, maxZoom: 4,
        textureOnViewport: big, hideEdgesOnViewport: big, boxSelectionEnabled: false });
      cy.on("tap", "node", (ev) => selectNode(ev.target.id()));
      cy.on("dbltap", "node[kind = 'group']", (ev) => toggleGroup(ev.target.id()));
      window.dcoptCy = cy;
    }
    cy.startBatch();
    cy.elements().remove();
    cy.add(elements);
    cy.endBatch();
    // dagre takes most of a switch on a big graph: a graph drawn before (same stage payload, same
    // groups expanded) gets its positions back instead of a new layout
    const shape = `${state.expandAll}|${[...state.expanded].sort().join(",")}`;
    if (!layouts.has(payload)) layouts.set(payload, new Map());
    const known = layouts.get(payload).get(shape);
    return new Promise((resolve) => {
      const layout = cy.layout(known ? { name: "preset", positions: (n) => known[n.id()], animate: false, fit: !keepViewport }
        : { name: "dagre", rankDir: "TB", nodeSep: 18, rankSep: 28, edgeSep: 6, animate: false, fit: !keepViewport });
      layout.one("layoutstop", () => requestAnimationFrame(() => {
        if (!known) {
          const positions = {};
          cy.nodes().forEach((n) => { if (!n.isParent()) positions[n.id()] = Object.assign({}, n.position()); });
          layouts.get(payload).set(shape, positions);
        }
        if (!keepViewport) readableViewport();
        const ms = performance.now() - t0;
        if (timings.firstPaint === null) timings.firstPaint = performance.now() - timings.start;
        $("#status").textContent = `${cy.nodes().length} nodes, ${cy.edges().length} edges drawn in ${ms.toFixed(0)} ms` +
          (payload.server_ms !== undefined ? ` (server ${payload.server_ms} ms)` : "");
        document.body.dataset.rendered = String((Number(document.body.dataset.rendered) || 0) + 1);
        resolve(ms);
      }));
      layout.run();
    });
  }

  function readableViewport() {
    // a long model fitted whole is unreadable: start at its top at a zoom where labels read
    cy.fit(undefined, 20);
    if (cy.zoom() >= 0.6) return;
    // the model's first input (else its topmost node) at the top centre
    const inputs = cy.nodes("[kind = 'io']").filter((n) => n.id().startsWith("in:"));
    const first = (inputs.length ? inputs : cy.nodes()).min((n) => n.position("y")).ele;
    cy.zoom(0.9);
    cy.pan({ x: cy.width() / 2 - 0.9 * first.position("x"), y: 40 - 0.9 * first.position("y") });
  }

  function toggleGroup(id) {
    if (state.expanded.has(id)) state.expanded.delete(id); else state.expanded.add(id);
    redraw(true);
  }

  async function redraw(keepViewport) {
    if (state.preview) return draw(state.preview, state.preview.changes && { added: state.preview.changes.added, rewired: state.preview.changes.rewired }, keepViewport);
    const p = state.payload;
    if (state.side === "before" && state.stage > 0) {
      const before = await stagePayload(state.stage - 1);
      return draw(before, { removed: p.changes.removed }, keepViewport);
    }
    return draw(p, { added: p.changes.added, rewired: p.changes.rewired }, keepViewport);
  }

  // -- stages ----------------------------------------------------------------------------------
  function renderStages() {
    const nav = $("#stages");
    nav.innerHTML = "";
    const s = state.session;
    let heading = null;
    const peak = Math.max(1, ...s.stages.map((st) => st.bytes || 0));
    for (const st of s.stages) {
      const origin = st.step ? st.step.origin : "input";
      const h = origin === "lowering" ? "lowering (what dcopt compile runs next)" : "pipeline";
      if (h !== heading) { nav.append(el("h3", {}, h)); heading = h; }
      const row = el("div", {
        class: "stage" + (st.index === state.stage ? " selected" : "") + (st.index && !st.modified ? " unchanged" : "") +
          (origin === "user" ? " user" : "") + (st.error ? " error" : ""),
        "data-index": st.index, title: st.error || (st.modified || !st.index ? "" : "changed nothing"),
        onclick: () => selectStage(st.index),
      }, el("span", { class: "idx" }, st.index),
        el("span", { class: "name" }, el("span", { class: "label" }, (origin === "user" ? "✎ " : "") + st.name),
          el("span", { class: "figures", title: st.unknown_nodes ? `${st.unknown_nodes} nodes not sized yet (left out)` : "" },
            `${human(st.flops)}FLOPs · ${human(st.bytes, "B")} · ${human(st.transient_bytes, "B")} between` +
            (st.unknown_nodes ? ` · ${st.unknown_nodes} unsized` : "")),
          el("span", { class: "bar", title: "bytes moved by all kernels (light) and between kernels (dark)" },
            el("span", { class: "all", style: `width:${(100 * st.bytes / peak).toFixed(1)}%` }),
            el("span", { class: "between", style: `width:${(100 * st.transient_bytes / peak).toFixed(1)}%` }))),
        el("span", { class: "n", title: "nodes" }, st.nodes));
      nav.append(row);
    }
    $("#undo").disabled = !s.can_undo;
    $("#redo").disabled = !s.can_redo;
  }

  async function selectStage(i, keepNode) {
    const t0 = performance.now();
    state.stage = i;
    state.preview = null;
    $("#banner").hidden = true;
    state.payload = await stagePayload(i);
    renderStages();
    renderReport();
    const t = state.payload.elements.totals;
    $("#totals").textContent = `stage ${i}: ${t.nodes} nodes · ${human(t.flops)}FLOPs · ${human(t.bytes, "B")} moved · ${human(t.transient_bytes, "B")} between kernels`;
    await redraw(false);
    timings.switches.push(performance.now() - t0);
    document.body.dataset.stage = String(i);
    if (keepNode && state.selected && cy.getElementById(state.selected).length) selectNode(state.selected);
    else { state.selected = null; }
    if (state.search) runSearch(state.search);
  }

  function renderReport() {
    const p = state.payload;
    const box = $("#tab-report");
    box.innerHTML = "";
    box.append(el("h2", {}, `${p.index}. ${p.name}`));
    if (p.error) box.append(el("p", { class: "error" }, p.error));
    if (p.index === 0) box.append(el("p", { class: "muted" }, "The model as imported. Pick a stage on the left to see what each pass did."));
    const c = p.changes;
    if (p.index > 0) box.append(el("p", {}, p.modified ? "" : "changed nothing. ",
      el("span", { class: "badge added" }, `+${c.added.length} added`), " ",
      el("span", { class: "badge removed" }, `-${c.removed.length} removed`), " ",
      el("span", { class: "badge rewired" }, `~${c.rewired.length} rewired`),
      el("span", { class: "muted" }, " (switch to 'before' to see what was removed)")));
    for (const r of p.records || []) {
      const stats = Object.entries(r.stats).map(([k, v]) => `${k}=${v}`).join(", ");
      const rec = el("div", { class: "record" + (r.modified ? " modified" : "") },
        el("div", {}, el("b", {}, r.name), ` · iteration ${r.iteration} · ${r.modified ? "modified" : "no change"} · ` +
          `${r.nodes_before} → ${r.nodes_after} nodes · ${(r.time_s * 1e3).toFixed(1)} ms`),
        stats ? el("div", { class: "muted" }, stats) : null);
      for (const [node, why] of r.refusals.slice(0, 50)) {
        rec.append(el("div", { class: "refusal" }, "refused at ", el("a", { href: "#", onclick: (e) => { e.preventDefault(); focusNode(node); } }, node), ": " + why));
      }
      if (r.refusals.length > 50) rec.append(el("div", { class: "muted" }, `… ${r.refusals.length - 50} more refusals`));
      box.append(rec);
    }
  }

  // -- nodes -----------------------------------------------------------------------------------
  function focusNode(id) {
    const n = cy.getElementById(id);
    if (!n.length) return;
    cy.animate({ center: { eles: n }, zoom: Math.max(cy.zoom(), 0.8) }, { duration: 200 });
    selectNode(id);
  }

  async function selectNode(id) {
    state.selected = id;
    cy.$(":selected").unselect();
    cy.getElementById(id).select();
    document.body.dataset.node = id;
    if (state.preview) return;
    const stage = state.side === "before" && state.stage > 0 ? state.stage - 1 : state.stage;
    if (id.startsWith("in:") || id.startsWith("out:")) return;
    showTab("node");
    const box = $("#tab-node");
    box.innerHTML = "loading…";
    try {
      renderNode(await get("/api/node", { i: stage, id }));
      document.body.dataset.detail = id;
    } catch (err) { box.innerHTML = ""; box.append(el("p", { class: "error" }, err.message)); }
    if (!STATIC) loadCandidates(stage, id);
  }

  function renderNode(d) {
    const box = $("#tab-node");
    box.innerHTML = "";
    const c = d.cost;
    box.append(el("h2", {}, d.label), el("div", { class: "muted" }, d.op + (d.domain ? ` (${d.domain})` : "")));
    const cost = el("table", {},
      el("tr", {}, el("td", {}, "FLOPs"), el("td", { class: "num" }, human(c.flops))),
      el("tr", {}, el("td", {}, "bytes read / written"), el("td", { class: "num" }, `${human(c.bytes_read, "B")} / ${human(c.bytes_written, "B")}`)),
      el("tr", {}, el("td", {}, "of which weights"), el("td", { class: "num" }, human(c.param_bytes, "B"))),
      el("tr", {}, el("td", {}, "FLOP per byte"), el("td", { class: "num" }, c.arithmetic_intensity === null ? "-" : c.arithmetic_intensity.toFixed(2))));
    if (c.fusion_bytes_saved !== null && c.fusion_bytes_saved !== undefined)
      cost.append(el("tr", {}, el("td", {}, "bytes fusion saved"), el("td", { class: "num" }, human(c.fusion_bytes_saved, "B"))));
    const timed = d.kernels.filter((k) => k.seconds !== null && k.seconds !== undefined);
    if (timed.length) cost.append(el("tr", {}, el("td", {}, "measured time"), el("td", { class: "num" }, timed.map((k) => (k.seconds * 1e6).toFixed(1) + " µs").join(" + "))));
    box.append(el("h4", {}, "cost"), cost);
    const io = el("table", {});
    for (const [what, list] of [["in", d.inputs], ["out", d.outputs]])
      for (const x of list) io.append(el("tr", {}, el("td", {}, what), el("td", {}, x.name), el("td", {}, x.type), el("td", { class: "muted" }, x.kind)));
    box.append(el("h4", {}, "inputs and outputs"), io);
    const attrs = Object.entries(d.attributes);
    if (attrs.length) box.append(el("h4", {}, "attributes"), el("table", {}, attrs.map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, v)))));
    box.append(el("h4", {}, "IR"), el("pre", {}, d.ir));
    renderOrigin(box, d.origin);
    box.append(el("h4", {}, "loop level (maps, tasklets, memlets)"));
    if (d.loops.length) box.append(el("pre", { class: "loops" }, d.loops.join("\n")));
    else box.append(el("p", { class: "muted" }, d.removed_by ? `not lowered: removed by ${d.removed_by}` : "no loop nodes (a view, a fallback op, or lowering is off)"));
    box.append(el("h4", {}, "generated code"));
    if (!d.kernels.length) box.append(el("p", { class: "muted" }, "none found for this node"));
    for (const k of d.kernels) {
      const inBuild = window.dcoptRecords && window.dcoptRecords.hasStep(k.step);
      box.append(el("div", {}, el("b", {}, k.kind), ` step ${k.step}` + (k.name ? ` → ${k.name}` : "") + (k.language ? ` (${k.language})` : ""),
        inBuild ? el("button", { class: "in-build", title: "this step in the open build", onclick: () => window.dcoptRecords.showStep(k.step) }, "in build") : null));
      if (k.source) box.append(el("pre", { class: "kernel" }, k.source));
      else box.append(el("pre", {}, JSON.stringify(k.params, null, 1)));
    }
  }

  function renderOrigin(box, o) {
    // where the node came from: the source model's node(s), a PyTorch stack trace, or the pass that made it
    if (!o) return;
    box.append(el("h4", {}, "source"));
    if (o.error) box.append(el("p", { class: "muted" }, "source model not read: " + o.error));
    const list = el("div", { class: "origin" });
    for (const e of o.entries) {
      list.append(el("div", { class: "origin-entry" },
        el("div", {}, el("b", {}, e.name || "(unnamed)"), ` ${e.op}` + (e.domain ? ` (${e.domain})` : "") + ` · ${e.format} node #${e.index}`),
        e.scope ? el("div", { class: "muted" }, "module: " + e.scope) : null,
        e.location ? el("div", { class: "location" }, e.location) : null,
        e.stack_trace ? el("details", {}, el("summary", {}, "stack trace"), el("pre", {}, e.stack_trace)) : null,
        Object.keys(e.metadata || {}).length ? el("details", {}, el("summary", {}, "metadata"),
          el("table", {}, Object.entries(e.metadata).map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, v))))) : null,
        e.doc_string && e.doc_string !== e.stack_trace ? el("div", { class: "muted" }, e.doc_string) : null));
    }
    if (o.entries.length) box.append(list);
    for (const c of o.created || []) box.append(el("p", { class: "created" }, `${c.label}: not in the source model, made by `,
      el("a", { href: "#", onclick: (ev) => { ev.preventDefault(); selectStage(c.index); } }, `stage ${c.index} (${c.name})`)));
    if (!o.entries.length && !(o.created || []).length) box.append(el("p", { class: "muted" }, "no source node found"));
  }

  async function loadCandidates(stage, id) {
    const box = $("#tab-edit");
    box.innerHTML = "";
    if (stage > state.session.editable_until) {
      box.append(el("p", { class: "muted" }, "Lowering stages are what dcopt compile does; passes and patches are inserted after op-level stages."));
      return;
    }
    box.append(el("p", { class: "muted" }, `Trying every pass and patch on stage ${stage}…`));
    let c;
    try { c = await get("/api/candidates", { i: stage, id }); } catch (err) { box.innerHTML = ""; box.append(el("p", { class: "error" }, err.message)); return; }
    if (state.selected !== id) return;
    box.innerHTML = "";
    box.append(el("h2", {}, `at ${id}, after stage ${stage}`));
    const uri = el("input", { type: "text", id: "uri", placeholder: "pass name or patch URI, e.g. swap_activation?to=Gelu" });
    const kind = el("select", { id: "uri-kind" }, el("option", { value: "patch" }, "patch"), el("option", { value: "pass" }, "pass"));
    box.append(el("div", { class: "uri" }, kind, uri,
      el("button", { onclick: () => preview(stage, kind.value, uri.value) }, "preview"),
      el("button", { onclick: () => apply(stage, kind.value, uri.value) }, "apply")));
    const section = (title, list, render) => {
      box.append(el("h4", {}, `${title} (${list.length})`));
      for (const x of list) box.append(render(x));
    };
    const row = (x, extra, open) => {
      // a step with parameters (a patch's, a pass's options) gets a form; preview/apply send its values
      const form = window.dcoptForms.form(paramsOf(x.kind, x.spec), open);
      const values = () => (form ? form.values() : undefined);
      return el("div", { class: "cand", "data-spec": x.spec, "data-kind": x.kind },
        el("span", { class: "badge" }, x.kind), " ", el("span", { class: "spec" }, x.spec), " ", extra || "",
        el("div", {}, el("button", { class: "preview", onclick: () => preview(stage, x.kind, x.spec, values()) }, "preview"),
          el("button", { class: "apply", onclick: () => apply(stage, x.kind, x.spec, values()) }, "apply")),
        x.summary ? el("div", { class: "muted" }, x.summary) : null, form ? form.element : null);
    };
    section("applies here", c.applies, (x) => row(x, el("span", { class: "muted" }, x.changes)));
    section("near misses here", c.near, (x) => { const r = row(x); for (const why of x.reasons) r.append(el("div", { class: "refusal" }, why)); return r; });
    section("changes other nodes", c.elsewhere, (x) => row(x, el("span", { class: "muted" }, x.changes)));
    if (c.needs.length) section("need parameters", c.needs, (x) => row(x, el("span", { class: "muted" }, x.reason), true));
    if (c.failed && c.failed.length) section("failed here", c.failed, (x) => el("div", { class: "cand" }, el("span", { class: "spec" }, x.spec), " ", el("span", { class: "error" }, x.reason)));
  }

  function paramsOf(kind, spec) {
    const s = state.session;
    if (kind === "patch") { const p = s.patches.find((q) => q.name === spec); return p ? p.params : []; }
    return (s.pass_options || {})[spec] || [];
  }

  async function preview(stage, kind, spec, params) {
    try {
      const p = await post("/api/preview", { after: stage, kind, spec, params });
      state.preview = p;
      const b = $("#banner");
      b.hidden = false;
      b.innerHTML = "";
      b.append(el("b", {}, "Preview: "), `${p.name} after stage ${stage} — ${p.modified ? `+${p.changes.added.length} -${p.changes.removed.length} ~${p.changes.rewired.length} nodes` : "changes nothing"} `,
        el("button", { id: "preview-apply", onclick: () => apply(stage, kind, spec, params) }, "apply"), " ",
        el("button", { onclick: () => { state.preview = null; b.hidden = true; redraw(false); } }, "cancel"));
      await redraw(false);
      document.body.dataset.preview = spec;
    } catch (err) { alert(err.message); }
  }

  async function apply(stage, kind, spec, params) {
    try {
      afterEdit(await post("/api/apply", { after: stage, kind, spec, params }));
    } catch (err) { alert(err.message); }
  }

  async function afterEdit(out) {
    state.session = out.session;
    state.version = out.session.version;
    state.cache.clear();
    state.preview = null;
    await selectStage(out.stage === null ? state.stage : Math.min(out.stage, out.session.stages.length - 1));
    document.body.dataset.edits = String(out.session.edits.length);
  }

  // -- search ----------------------------------------------------------------------------------
  function runSearch(q) {
    state.search = q;
    cy.nodes().removeClass("hit");
    if (!q) { $("#search-count").textContent = ""; return; }
    const needle = q.toLowerCase();
    const hits = new Set();
    for (const n of (state.preview || state.payload).elements.nodes) {
      if ((n.label + " " + n.op).toLowerCase().includes(needle)) {
        hits.add(outermostVisible(n.id) || n.id);
      }
    }
    const found = cy.nodes().filter((n) => hits.has(n.id()));
    found.addClass("hit");
    $("#search-count").textContent = `${found.length} found`;
    if (found.length) cy.animate({ fit: { eles: found, padding: 60 } }, { duration: 200 });
  }

  function outermostVisible(id) {
    // a member of a collapsed group: the outermost group that is drawn
    const parts = id.split("::");
    for (let i = 1; i <= parts.length; i++) { const anc = parts.slice(0, i).join("::"); if (cy.getElementById(anc).length) return anc; }
    return null;
  }

  async function showNodes(stage, ids) {
    // a build step's nodes: that stage's graph with them highlighted and in view
    if (state.stage !== stage || state.preview) await selectStage(stage);
    cy.nodes().removeClass("hit");
    const found = cy.nodes().filter((n) => new Set(ids.map(outermostVisible)).has(n.id()));
    found.addClass("hit");
    if (found.length) { cy.fit(found, 80); if (cy.zoom() > 1.2) { cy.zoom(1.2); cy.center(found); } selectNode(found[0].id()); }
    $("#search-count").textContent = `${found.length} highlighted`;
    document.body.dataset.shown = ids.join(",");
    return found.length;
  }

  function showTab(name) {
    for (const b of document.querySelectorAll(".tabs button")) b.classList.toggle("active", b.dataset.tab === name);
    for (const t of document.querySelectorAll(".tab")) t.hidden = t.id !== "tab-" + name;
  }

  async function start() {
    if (STATIC) document.body.classList.add("static");
    for (const b of document.querySelectorAll(".tabs button")) b.addEventListener("click", () => showTab(b.dataset.tab));
    $("#search").addEventListener("input", (e) => runSearch(e.target.value.trim()));
    $("#side").addEventListener("change", (e) => { state.side = e.target.value; redraw(false); });
    $("#expand-groups").addEventListener("change", (e) => { state.expandAll = e.target.checked; redraw(false); });
    $("#fit").addEventListener("click", () => cy && cy.fit(undefined, 20));
    if (!STATIC) {
      $("#undo").addEventListener("click", async () => afterEdit(await post("/api/undo")));
      $("#redo").addEventListener("click", async () => afterEdit(await post("/api/redo")));
    }
    state.session = await get("/api/session");
    state.version = state.session.version;
    const last = state.session.editable_until;
    await selectStage(last);
    if (window.dcoptRecords) await window.dcoptRecords.init();
  }
  // what the other scripts (records.js: the build & run panel) use
  window.dcoptApp = { get, el, human, showNodes, STATIC, DATA, session: () => state.session };
  const fail = (err) => { document.body.dataset.error = err.message; $("#status").textContent = "error: " + err.message; };
  // after every script of the page ran (they define the panel and the forms this one calls)
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", () => start().catch(fail));
  else start().catch(fail);
})();
