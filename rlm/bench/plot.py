"""A PNG of score against context size (RLM and, when asked, the base model).

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
        handles, labels = axes.flat[0].get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="lower center", ncol=len(handles), frameon=False)
        fig.suptitle(f"score vs context size (n={report.n} per point, seed={report.seed})")
        fig.tight_layout(rect=(0, 0.07 if handles else 0, 1, 0.95))
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


def _panel(ax, report, name: str) -> None:
    rows = report.rows(name)
    sizes = [r["size"] for r in rows]
    ax.plot(sizes, [r["rlm_score"] for r in rows], marker="o", label=f"RLM ({report.root_model})")
    base = [(r["size"], r["base_score"]) for r in rows if r["base_score"] is not None]
    if base:
        ax.plot([s for s, _ in base], [v for _, v in base], marker="s", linestyle="--",
                label=f"base model, first {report.base_window:,} chars")
        ax.axvline(report.base_window, color="grey", linewidth=0.8, linestyle=":")
    if len(sizes) > 1 and max(sizes) / max(min(sizes), 1) >= 10:
        ax.set_xscale("log")
    if sizes:
        ax.set_xticks(sizes)
        ax.set_xticklabels([_size_label(s) for s in sizes])
    ax.minorticks_off()
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("context size (characters)")
    ax.set_ylabel("mean score")
    ax.set_title(name)
    ax.grid(True, alpha=0.3)


def _size_label(size: int) -> str:
    if size >= 1_000_000 and size % 100_000 == 0:
        return f"{size / 1_000_000:g}M"
    if size >= 1000 and size % 100 == 0:
        return f"{size / 1000:g}k"
    return str(size)
