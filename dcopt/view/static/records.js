/* dcopt view: the "build & run" panel -- a compiled build and a recorded run side by side, over
 * the graph. The build column shows its manifest (pipeline, patches, sizes, per-pass summary,
 * toolchain) and its schedule: every step with its kernel, the kernel's source, and a link to
 * the graph nodes it covers. The run column shows what ran and its figures, and for a benchmark
 * the latency of every runtime with its spread (charts.js). Live, pickers list this model's
 * builds and runs; a static export holds the build and run it was made with. */
(function () {
  "use strict";
  const A = () => window.dcoptApp;
  const $ = (sel) => document.querySelector(sel);
  const state = { build: null, run: null, records: null };
  const when = (t) => (t ? new Date(t * 1000).toLocaleString() : "-");
  const json = (v) => (v === null || v === undefined ? "-" : typeof v === "string" ? v : JSON.stringify(v));

  function show(open) {
    $("#records-pane").hidden = !open;
    $("#records-toggle").classList.toggle("active", open);
    document.body.dataset.records = open ? "open" : "closed";
  }

  function table(rows) {
    const el = A().el;
    return el("table", { class: "kv" }, rows.filter((r) => r).map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, v))));
  }

  async function picker(kind) {
    const { el, get, STATIC } = A();
    if (STATIC) return null;
    if (!state.records) state.records = await get("/api/records");
    const list = kind === "build" ? state.records.builds : state.records.runs;
    const current = kind === "build" ? state.build && state.build.ref : state.run && state.run.id;
    const select = el("select", { id: kind + "-picker", onchange: (e) => e.target.value && (kind === "build" ? loadBuild : loadRun)(e.target.value) },
      el("option", { value: "" }, list.length ? `pick a ${kind} (${list.length})` : `no ${kind}s recorded for this model`));
    for (const x of list) {
      const text = kind === "build" ? `${x.kind} ${x.kind === "cache" ? x.ref.slice(0, 12) : x.path} · ${x.pipeline}` +
        (x.patches.length ? ` +${x.patches.length} patch(es)` : "") + ` · ${when(x.last_used)}`
        : `${x.short_id} ${x.kind}${x.label ? " " + x.label : ""} · ${x.status} · ${when(x.started)}` +
          (x.latency_ms ? ` · ${x.latency_ms.toPrecision(3)} ms` : "");
      const o = el("option", { value: x.ref }, text);
      if (x.ref === current) o.selected = true;
      select.append(o);
    }
    return select;
  }

  async function loadBuild(ref) {
    const col = $("#build-col");
    try { state.build = await A().get("/api/build", { ref }); } catch (err) { col.append(A().el("p", { class: "error" }, err.message)); return; }
    await renderBuild();
  }

  async function loadRun(ref) {
    const col = $("#run-col");
    try { state.run = await A().get("/api/run", { ref }); } catch (err) { col.append(A().el("p", { class: "error" }, err.message)); return; }
    await renderRun();
  }

  // One column's frame: its heading, the picker of this model's builds or runs, and either the
  // open record or a line saying how to open one.
  async function openColumn(kind, empty) {
    const { el } = A();
    const col = $(`#${kind}-col`);
    col.innerHTML = "";
    col.append(el("h2", {}, kind));
    const pick = await picker(kind);
    if (pick) col.append(pick);
    if (!state[kind]) col.append(el("p", { class: "muted" }, empty));
    return { col, item: state[kind] };
  }

  async function renderBuild() {
    const { el, human } = A();
    const { col, item: b } = await openColumn("build", "No build open: dcopt view MODEL --build DIR, or pick one.");
    if (!b) return;
    const m = b.model || {};
    col.append(table([
      ["build", `${b.path} (${b.kind})`],
      ["model", el("span", {}, `${m.name} sha256 ${(m.sha256 || "").slice(0, 16)} `,
        el("span", { class: "badge " + (b.same_model ? "added" : "removed") }, b.same_model ? "the model shown" : "another model"))],
      ["pipeline", `${b.pipeline} (ran ${b.pipeline_applied})`],
      ["patches", (b.patches || []).join(", ") || "-"],
      ["sizes", json(b.bindings)],
      ["steps", Object.entries(b.steps || {}).map(([k, v]) => `${v} ${k}`).join(", ")],
      ["not native", json(b.not_native)],
      ["memory", Object.entries(b.memory || {}).map(([k, v]) => `${k} ${human(v, "B")}`).join(", ")],
      ["compiled in", `${b.compile_seconds} s`],
      ["toolchain", `dcopt ${b.dcopt}, ` + Object.entries(b.toolchain || {}).map(([k, v]) => `${k} ${v}`).join(", ")],
    ]));
    if (!b.same_pipeline) col.append(el("p", { class: "muted" },
      "Built from other steps or sizes than the viewer shows: kernels are linked to nodes by name, where names still match."));
    const changed = b.passes.filter((r) => r.modified).length;
    col.append(el("details", { class: "passes" }, el("summary", {}, `passes: ${b.passes.length} run, ${changed} changed the graph`), el("table", { class: "passes" }, el("tr", {}, el("th", {}, "pass"), el("th", {}, "changed"), el("th", {}, "nodes"), el("th", {}, "counters")),
      b.passes.map((r) => el("tr", { class: r.modified ? "modified" : "" }, el("td", {}, r.name), el("td", {}, r.modified ? "yes" : "no"),
        el("td", { class: "num" }, `${r.nodes[0]} → ${r.nodes[1]}`),
        el("td", { class: "muted" }, Object.entries(r.stats || {}).filter(([, v]) => v).map(([k, v]) => `${k}=${v}`).join(", ")))))));
    col.append(el("h4", {}, `schedule: ${b.steps_list.length} steps`));
    const steps = el("table", { class: "steps" }, el("tr", {}, el("th", {}, "#"), el("th", {}, "step"), el("th", {}, "kernel"), el("th", {}, "graph"), el("th", {}, "source")));
    for (const s of b.steps_list) {
      const src = el("tr", { class: "source-row", hidden: "" }, el("td", { colspan: 5 }, el("pre", { class: "kernel" }, s.source)));
      steps.append(el("tr", { class: "step", "data-step": s.label },
        el("td", { class: "num" }, s.index), el("td", {}, s.label, el("div", { class: "muted" }, s.kind)),
        el("td", {}, s.kernel || "-", s.language ? el("div", { class: "muted" }, s.language) : null),
        el("td", {}, s.nodes.length ? el("button", { class: "nodes", title: s.nodes.join(", "),
          onclick: async () => { show(false); await A().showNodes(b.link_stage, s.nodes); } }, `${s.nodes.length} node(s)`) : el("span", { class: "muted" }, "-")),
        el("td", {}, s.source ? el("button", { class: "source", onclick: () => { src.hidden = !src.hidden; } }, "source") : el("span", { class: "muted" }, "-"))), src);
    }
    col.append(steps);
    document.body.dataset.build = b.ref;
  }

  async function renderRun() {
    const { el } = A();
    const { col, item: r } = await openColumn("run", "No run open: dcopt view MODEL --run RUN (dcopt runs ls), or pick one.");
    if (!r) return;
    const o = r.options || {};
    col.append(table([
      ["run", `${r.id.slice(0, 12)} · ${r.kind} · ${r.status}` + (r.label ? ` · ${r.label}` : "") + (r.tags.length ? ` · tags ${r.tags.join(", ")}` : "")],
      ["started", `${when(r.started)}, took ${r.finished ? (r.finished - r.started).toFixed(1) + " s" : "-"}`],
      ["command", r.argv.slice(1).join(" ")],
      ["model", `${r.model.name || "-"} sha256 ${(r.model.sha256 || "").slice(0, 16)}`],
      ["options", ["pipeline", "patches", "threads", "reps", "runtimes"].filter((k) => o[k] !== undefined && o[k] !== null)
        .map((k) => `${k} ${json(o[k])}`).join(" · ")],
      ["host", `${r.host.hostname} · ${r.host.cpu_model} · ${r.host.usable_cpus} CPUs`],
      r.error ? ["error", el("span", { class: "error" }, r.error)] : null,
    ]));
    if (r.build && r.build.output) col.append(el("p", {}, el("button", { id: "open-run-build", onclick: () => loadBuild(r.build.output) }, "open its build"), " ", r.build.output));
    const c = r.charts;
    if (c) {
      for (const m of c.models) {
        col.append(el("h4", {}, `latency: ${m.name}` + (m.skipped ? ` (skipped: ${m.skipped})` : "")));
        if (m.runtimes.some((x) => x.reps > 0)) col.append(window.dcoptCharts.latency(m, c.axis_ms));
        const sp = window.dcoptCharts.speedups(m);
        if (sp) col.append(sp);
        col.append(el("table", { class: "figures" }, el("tr", {}, ["runtime", "median", "p10-p90", "IQR", "calls", "correct"].map((h) => el("th", {}, h))),
          m.runtimes.map((x) => el("tr", {}, el("td", { title: x.backend || "" }, x.runtime),
            el("td", { class: "num" }, x.reps ? x.median.toPrecision(4) + " ms" : x.status),
            el("td", { class: "num" }, x.reps ? `${x.p10.toPrecision(3)}-${x.p90.toPrecision(3)}` : ""),
            el("td", { class: "num" }, x.reps ? (x.p75 - x.p25).toPrecision(3) : ""),
            el("td", { class: "num" }, x.reps), el("td", {}, x.valid === null || x.valid === undefined ? "-" : x.valid ? "ok" : "WRONG")))));
      }
      col.append(el("p", { class: "muted" }, `${c.config.threads} thread(s), up to ${c.config.reps} calls per runtime in bursts of ${c.config.burst}`));
    } else if (r.kind === "bench") col.append(el("p", { class: "muted" }, "This benchmark run kept no result to chart."));
    const metrics = Object.entries(r.metrics || {});
    if (metrics.length) col.append(el("h4", {}, "metrics"), table(metrics.map(([k, v]) => [k, typeof v === "number" ? String(+v.toPrecision(5)) : String(v)])));
    document.body.dataset.run = r.id;
  }

  async function init() {
    const { session, STATIC } = A();
    const open = session().open || {};
    $("#records-toggle").addEventListener("click", async () => {
      const opening = $("#records-pane").hidden;
      show(opening);
      if (opening && !$("#build-col").childNodes.length) { await renderBuild(); await renderRun(); }
    });
    if (STATIC && !open.build && !open.run) { $("#records-toggle").hidden = true; return; }
    if (open.build) await loadBuild(open.build);
    if (open.run) await loadRun(open.run);
    if (open.build || open.run) {
      if (!open.build) await renderBuild();
      if (!open.run) await renderRun();
      show(true);
    }
  }

  function hasStep(label) {
    return !!(state.build && state.build.steps_list.some((s) => s.label === label));
  }

  function showStep(label) {
    show(true);
    const row = [...document.querySelectorAll("#build-col tr.step")].find((r) => r.dataset.step === label);
    if (!row) return;
    const src = row.nextElementSibling;
    if (src && src.classList.contains("source-row")) src.hidden = false;
    row.classList.add("flash");
    row.scrollIntoView({ block: "center" });
  }

  window.dcoptRecords = { init, hasStep, showStep };
})();
