"""The epoch plot beside `lapgen eval report` (`report.png`): every metric over training epochs.

One colour per model (and per paper setup), the same in every panel, and one legend for the figure. The
paper's Table-1 curves share axes only with lapgen values that are comparable with them
(`lapgen.metrics.report.comparability`); the others (random-weight demo extractors, another protocol or N)
get a row of panels of their own, so an incomparable value never reads as a point on the paper's scale.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lapgen.metrics.paper import COLUMNS, PAPER_TABLE1, TITLES


def epoch_series(report: dict[str, Any]) -> dict[str, Any]:
    """What the epoch plot draws, as plain data.

    `panels[metric]`: `beside_paper` ({label: [(epoch, value)]}, the values comparable with the paper's
    column, drawn on the paper's axes), `own_axes` (the values that are not, e.g. random-weight demo
    extractors, drawn apart so they never share an axis with the paper's) and `paper` ({setup: points}).
    `colors`: one colour per model label (and per paper setup), the same in every panel.
    """
    panels: dict[str, dict[str, dict[str, list[tuple[float, float]]]]] = {}
    for r in report["rows"]:
        if r["epoch"] is None:
            continue
        label = f"{r['model']} [{r['setup'] or r['paper_setup'] or '-'}]"
        for c, v in r["ours"].items():
            if c in COLUMNS and v is not None:
                side = "beside_paper" if r["comparable"].get(c) else "own_axes"
                panel = panels.setdefault(c, {"beside_paper": {}, "own_axes": {}, "paper": {}})
                panel[side].setdefault(label, []).append((float(r["epoch"]), float(v)))
    for c, panel in panels.items():
        for side in ("beside_paper", "own_axes"):
            for pts in panel[side].values():
                pts.sort()
        for setup, by_epoch in PAPER_TABLE1.items():
            pts = sorted((float(e), float(v[c])) for e, v in by_epoch.items() if e is not None and c in v)
            if len(pts) > 1:
                panel["paper"][f"paper: {setup}"] = pts
    labels = sorted({label for panel in panels.values() for side in ("beside_paper", "own_axes")
                     for label in panel[side]})
    papers = sorted({label for panel in panels.values() for label in panel["paper"]})
    palette = [f"C{i}" for i in range(10)]
    colors = {label: palette[i % len(palette)] for i, label in enumerate(labels + papers)}
    return {"panels": {c: panels[c] for c in COLUMNS if c in panels}, "colors": colors}


def draw_epochs(series: dict[str, Any]):
    """The matplotlib figure of `epoch_series`: a top row of panels on the paper's axes (the paper's curves
    dashed, lapgen's comparable values solid) and, when there are any, a second row of lapgen values that
    are not comparable with the paper, on axes of their own. One legend for the whole figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = list(series["panels"])
    apart = any(p["own_axes"] for p in series["panels"].values())
    fig, axes = plt.subplots(2 if apart else 1, len(cols), figsize=(4 * len(cols), 6.0 if apart else 3.4),
                             squeeze=False)
    colors = series["colors"]
    for i, c in enumerate(cols):
        panel, top = series["panels"][c], axes[0][i]
        for label, pts in panel["paper"].items():
            top.plot(*zip(*pts), ls="--", alpha=0.6, color=colors[label], label=label)
        for label, pts in sorted(panel["beside_paper"].items()):
            top.plot(*zip(*pts), marker="o", color=colors[label], label=label)
        top.set_title(f"{TITLES[c]} (beside the paper)")
        top.set_xlabel("epoch")
        if apart:
            low = axes[1][i]
            for label, pts in sorted(panel["own_axes"].items()):
                low.plot(*zip(*pts), marker="o", color=colors[label], label=label)
            low.set_title(f"{TITLES[c]} (not comparable with the paper)", fontsize=9)
            low.set_xlabel("epoch")
            if not panel["own_axes"]:
                low.set_axis_off()
    handles: dict[str, Any] = {}
    for ax in axes.flat:
        for line in ax.get_lines():
            handles.setdefault(line.get_label(), line)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(4, max(1, len(handles))),
               fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.06 + 0.02 * ((len(handles) - 1) // 4), 1, 1))
    return fig


def plot_epochs(report: dict[str, Any], path: Path) -> bool:
    """Write the epoch plot (`draw_epochs`) to `path`; False when no row has an epoch."""
    series = epoch_series(report)
    if not series["panels"]:
        return False
    import matplotlib.pyplot as plt

    fig = draw_epochs(series)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
