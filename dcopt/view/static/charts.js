/* dcopt view: the run panel's charts, drawn as inline SVG (no chart library, nothing fetched).
 * latency(): per runtime, the timed calls as dots over a box (25-75th percentile), whiskers
 * (10-90th) and the median, labelled, on one axis for all runtimes that ends past the 95th
 * percentile (the data comes from dcopt/view/run_panel.py, the figures dcopt runs plot draws).
 * speedups(): dcopt's speedup over each peer as bars, 1x drawn as the line to beat. */
(function () {
  "use strict";
  const NS = "http://www.w3.org/2000/svg";
  const svg = (tag, attrs, text) => {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const fmt = (v) => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v >= 1 ? v.toFixed(2) : v.toPrecision(3));

  function ticks(end, n) {
    const step0 = end / n, mag = Math.pow(10, Math.floor(Math.log10(step0)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= step0);
    const out = [];
    for (let t = 0; t <= end + 1e-12; t += step) out.push(t);
    return out;
  }

  function latency(model, axisMs) {
    const rows = model.runtimes.filter((r) => r.reps > 0);
    const W = 560, left = 110, right = 20, rowH = 34, top = 10, H = top + rows.length * rowH + 34;
    const end = axisMs || Math.max(...rows.map((r) => r.max));
    const x = (v) => left + (Math.min(v, end) / end) * (W - left - right);
    const root = svg("svg", { class: "chart latency", viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img",
      "aria-label": `latency per runtime for ${model.name}` });
    for (const t of ticks(end, 5)) {
      root.append(svg("line", { x1: x(t), x2: x(t), y1: top, y2: H - 28, class: "grid" }));
      root.append(svg("text", { x: x(t), y: H - 16, class: "tick", "text-anchor": "middle" }, fmt(t)));
    }
    root.append(svg("text", { x: (left + W - right) / 2, y: H - 2, class: "axis-label", "text-anchor": "middle" },
      "latency per call (ms): dots every call, box 25-75th, whiskers 10-90th percentile, red median"));
    rows.forEach((r, i) => {
      const cy = top + i * rowH + rowH / 2;
      const g = svg("g", { class: "runtime", "data-runtime": r.runtime });
      g.append(svg("text", { x: left - 8, y: cy + 4, "text-anchor": "end", class: "name" }, r.runtime));
      r.dots.forEach((v, k) => g.append(svg("circle", { cx: x(v), cy: cy - 8 + ((k * 7919) % 17) - 0.5, r: 1.6, class: "dot" })));
      g.append(svg("line", { x1: x(r.p10), x2: x(r.p90), y1: cy, y2: cy, class: "whisker" }));
      for (const v of [r.p10, r.p90]) g.append(svg("line", { x1: x(v), x2: x(v), y1: cy - 5, y2: cy + 5, class: "whisker" }));
      g.append(svg("rect", { x: x(r.p25), y: cy - 8, width: Math.max(1, x(r.p75) - x(r.p25)), height: 16, class: "box" }));
      g.append(svg("line", { x1: x(r.median), x2: x(r.median), y1: cy - 10, y2: cy + 10, class: "median" }));
      g.append(svg("text", { x: x(r.median), y: cy - 11, "text-anchor": "middle", class: "median-label" }, fmt(r.median) + " ms"));
      const beyond = r.dots.filter((v) => v > end).length;
      g.append(svg("title", {}, `${r.runtime}: median ${fmt(r.median)} ms, p10-p90 ${fmt(r.p10)}-${fmt(r.p90)} ms, ` +
        `min ${fmt(r.min)}, max ${fmt(r.max)} ms, ${r.reps} calls` + (beyond ? `, ${beyond} beyond the axis` : "")));
      root.append(g);
    });
    return root;
  }

  function speedups(model) {
    const peers = Object.entries(model.speedups).filter(([, s]) => s.speedup);
    if (!peers.length) return null;
    const W = 560, left = 110, right = 50, rowH = 24, top = 6, H = top + peers.length * rowH + 30;
    const end = Math.max(1.2, ...peers.map(([, s]) => s.speedup)) * 1.1;
    const x = (v) => left + (v / end) * (W - left - right);
    const root = svg("svg", { class: "chart speedup", viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img",
      "aria-label": `dcopt speedup over peers for ${model.name}` });
    peers.forEach(([peer, s], i) => {
      const y = top + i * rowH;
      root.append(svg("text", { x: left - 8, y: y + rowH / 2 + 4, "text-anchor": "end", class: "name" }, "vs " + peer));
      root.append(svg("rect", { x: left, y: y + 4, width: x(s.speedup) - left, height: rowH - 8,
        class: "bar " + (s.speedup >= 1 ? "faster" : "slower") + (s.valid === false ? " invalid" : "") }));
      root.append(svg("text", { x: x(s.speedup) + 4, y: y + rowH / 2 + 4, class: "value" },
        s.speedup.toFixed(2) + "x" + (s.valid === false ? " (invalid)" : "")));
    });
    root.append(svg("line", { x1: x(1), x2: x(1), y1: top, y2: H - 24, class: "one" }));
    root.append(svg("text", { x: (left + W - right) / 2, y: H - 6, class: "axis-label", "text-anchor": "middle" },
      "dcopt speedup = peer median / dcopt median (dashed: 1x, >1: dcopt faster)"));
    return root;
  }

  window.dcoptCharts = { latency, speedups };
})();
