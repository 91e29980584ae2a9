"""A PNG of score against context size (RLM and, when asked, the base model and the oracle), with
95% intervals as error bars and n per line in the legend.

matplotlib is optional (``pip install matplotlib`` or ``pip install 'rlm[plot]'``).
"""

from __future__ import annotations

from pathlib import Path

from rlm.errors import UsageError

INSTALL_HINT = "install it with `pip install matplotlib` (or `pip install 'rlm[plot]'`), or leave out --plot"


def require_matplotlib() -> None:
    """Raise a UsageError saying how to install matplotlib when it is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("--plot needs matplotlib, which is not installed", hint=INSTALL_HINT) from None


def plot_report(report, path: str | Path) -> Path:
    """Write the plot of ``report`` (a BenchReport) to ``path``, one panel per benchmark; returns the path."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    if path.parent and not path.parent.exists():
        raise UsageError(f"cannot write the plot: the folder {path.parent} does not exist")
    names = [name for name in report.benchmarks if report.rows(name)] or report.benchmarks[:1]
    cols = min(len(names), 2)
    nrows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(6.2 * cols, 4.2 * nrows), dpi=110, squeeze=False)
    try:
        for ax, name in zip(axes.flat, names, strict=False):
            _panel(ax, report, name)
        for ax in list(axes.flat)[len(names):]:
            ax.set_visible(False)
        split = f", split {report.split}" if report.split else ""
        fig.suptitle(f"score vs context size (seed {report.seed}{split}; bars: 95% intervals, Wilson for 0/1 "
                     "scores, bootstrap for F1)", fontsize=9)
        fig.tight_layout(rect=(0, 0, 1, 0.95))
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


_STYLE = {"rlm": ("o", "-"), "base": ("s", "--"), "oracle": ("^", ":")}


def _panel(ax, report, name: str) -> None:
    from rlm.jobs.benchmark import SYSTEM_LABELS

    rows = report.rows(name)
    sizes = [r["size"] for r in rows]
    for side, (marker, style) in _STYLE.items():
        points = [(r["size"], r["systems"][side]) for r in rows if side in r["systems"]]
        if not points:
            continue
        xs = [x for x, _ in points]
        ys = [s["score"]["mean"] for _, s in points]
        low = [s["score"]["mean"] - s["score"]["lo"] for _, s in points]
        high = [s["score"]["hi"] - s["score"]["mean"] for _, s in points]
        ns = sorted({s["n"] for _, s in points})
        label = SYSTEM_LABELS[side] + (f" ({report.root_model})" if side == "rlm" else "")
        ax.errorbar(xs, ys, yerr=[low, high], marker=marker, linestyle=style, capsize=3,
                    label=f"{label}, n={'/'.join(map(str, ns))}")
    if len(sizes) > 1 and max(sizes) / max(min(sizes), 1) >= 10:
        ax.set_xscale("log")
    if sizes:
        ax.set_xticks(sizes)
        ax.set_xticklabels([_size_label(s) for s in sizes])
    ax.minorticks_off()
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("context size (characters)")
    metric = rows[0]["metric"] if rows else "score"
    ax.set_ylabel(f"mean {metric} (95% interval)")
    ax.set_title(name)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best")


def _size_label(size: int) -> str:
    if size >= 1_000_000 and size % 100_000 == 0:
        return f"{size / 1_000_000:g}M"
    if size >= 1000 and size % 100 == 0:
        return f"{size / 1000:g}k"
    return str(size)
