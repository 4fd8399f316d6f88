"""Charts where people look rather than read (matplotlib, Agg backend: no display needed).

* :func:`latency_chart`: per model, the distribution of every timed call per runtime (box plot
  over the raw samples, median annotated) -- spread is part of the answer on a busy machine;
* :func:`speedup_chart`: dcopt's speedup over each peer (peer median / dcopt median), one bar
  group per benchmark run or model, 1x drawn as the line to beat;
* :func:`metric_chart`: one metric over a sequence of runs (oldest first), labelled by run.

Each writes PNG or SVG by the path's suffix, atomically, and returns the path.
"""

from __future__ import annotations

from pathlib import Path

from dcopt.errors import InputError

FORMATS = (".png", ".svg")


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise InputError("charts need matplotlib: pip install 'dcopt[runs]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> Path:
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise InputError(f"chart file '{path}': expected a .png or .svg name, got '{path.suffix or 'no suffix'}'")
    path.parent.mkdir(parents=True, exist_ok=True)
    from dcopt.outputs import staged_file

    with staged_file(path) as tmp:
        fig.savefig(tmp, dpi=130, bbox_inches="tight", format=path.suffix.lower()[1:])
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _samples(info: dict) -> list[float]:
    return [t for burst in info.get("times_ms_by_round", []) for t in burst]


def latency_chart(models: list[dict], path, title: str | None = None) -> Path:
    """Latency distribution per runtime for each model entry of a benchmark result."""
    import numpy as np

    plt = _pyplot()
    models = [m for m in models if any(_samples(i) for i in m.get("runtimes", {}).values())]
    if not models:
        raise InputError("no latency samples to plot (a benchmark run records them; compile runs have none)")
    fig, axes = plt.subplots(len(models), 1, figsize=(7.5, 1.2 + 0.55 * max(len(m["runtimes"]) for m in models)
                                                      * len(models)), squeeze=False, sharex=True)
    # one axis for all, ending past the 95th percentile: one scheduler stall must not squeeze every box flat
    right = 1.15 * max(float(np.percentile(_samples(i), 95)) for m in models for i in m["runtimes"].values()
                       if _samples(i))
    for ax, m in zip(axes[:, 0], models):
        names = [rt for rt, info in m["runtimes"].items() if _samples(info)]
        data = [_samples(m["runtimes"][rt]) for rt in names]
        ax.boxplot(data, vert=False, tick_labels=names, showfliers=True, widths=0.6,
                   flierprops={"markersize": 2, "alpha": 0.4}, medianprops={"color": "tab:red"})
        clipped = sum(int((np.asarray(d) > right).sum()) for d in data)
        ax.set_xlim(0, right)
        for y, samples in enumerate(data, 1):
            median = float(np.median(samples))
            ax.annotate(f"{median:.3g} ms", (min(median, right), y + 0.3), xytext=(0, 2), textcoords="offset points",
                        ha="center", va="bottom", fontsize=8, color="tab:red")
        note = f"  ({clipped} slow sample(s) beyond the axis)" if clipped else ""
        ax.set_title(f"{m.get('name', '')}{note}", fontsize=10, loc="left")
        ax.set_xlabel("latency per call (ms); red: median")
        ax.set_ylim(0.4, len(data) + 0.75)
        ax.grid(axis="x", alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def speedup_chart(groups: dict[str, dict[str, float]], path, title: str | None = None) -> Path:
    """``groups``: bar group label (a run or a model) -> {peer: dcopt speedup over it}."""
    plt = _pyplot()
    groups = {g: s for g, s in groups.items() if s}
    if not groups:
        raise InputError("no speedups to plot (benchmark runs with dcopt and at least one peer record them)")
    peers = sorted({p for s in groups.values() for p in s})
    width = 0.8 / len(peers)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.1 * len(groups) * max(1, len(peers) / 2) + 1.5), 3.6))
    for i, peer in enumerate(peers):
        xs = [g + (i - (len(peers) - 1) / 2) * width for g in range(len(groups))]
        values = [s.get(peer, 0.0) for s in groups.values()]
        bars = ax.bar(xs, values, width, label=f"vs {peer}")
        ax.bar_label(bars, labels=[f"{v:.2f}x" if v else "" for v in values], fontsize=8, padding=2)
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(groups)), list(groups), rotation=20 if len(groups) > 4 else 0, ha="right"
                  if len(groups) > 4 else "center", fontsize=8)
    ax.set_ylabel("dcopt speedup (peer median / dcopt median)")
    ax.margins(y=0.15)
    ax.legend(fontsize=8)
    ax.set_title(title or "dcopt speedup over peers (>1: dcopt faster)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def metric_chart(points: list[tuple[str, float]], metric: str, path, title: str | None = None) -> Path:
    """``points``: (run label, value), oldest first."""
    plt = _pyplot()
    if not points:
        raise InputError(f"no run has metric '{metric}' to plot")
    fig, ax = plt.subplots(figsize=(max(4.5, 0.6 * len(points) + 2), 3.4))
    ax.plot(range(len(points)), [v for _, v in points], marker="o")
    for x, (_, v) in enumerate(points):
        ax.annotate(f"{v:.3g}", (x, v), xytext=(0, 6), textcoords="offset points", ha="center", fontsize=8)
    ax.set_xticks(range(len(points)), [label for label, _ in points], rotation=30 if len(points) > 5 else 0,
                  ha="right" if len(points) > 5 else "center", fontsize=8)
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.margins(y=0.2)
    ax.set_title(title or f"{metric} over runs", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def bench_charts(result: dict, directory, fmt: str = "png") -> list[Path]:
    """The charts of one benchmark result (``benchmarks.run``'s JSON): latency distributions and
    speedups per model, written into ``directory``."""
    directory = Path(directory)
    out = [latency_chart(result["models"], directory / f"latency.{fmt}")]
    speedups = {m["name"]: {p: s["speedup"] for p, s in m.get("speedups", {}).items()} for m in result["models"]}
    if any(speedups.values()):
        out.append(speedup_chart(speedups, directory / f"speedup.{fmt}"))
    return out
