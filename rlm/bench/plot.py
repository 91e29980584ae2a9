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
    """Write the plot of ``report`` (a BenchReport) to ``path``; returns the path."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    if path.parent and not path.parent.exists():
        raise UsageError(f"cannot write the plot: the folder {path.parent} does not exist")
    rows = report.rows()
    sizes = [r["size"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    try:
        ax.plot(sizes, [r["rlm_score"] for r in rows], marker="o", label=f"RLM ({report.root_model})")
        base = [(r["size"], r["base_score"]) for r in rows if r["base_score"] is not None]
        if base:
            ax.plot([s for s, _ in base], [v for _, v in base], marker="s", linestyle="--",
                    label=f"base, window {report.base_window:,} chars")
        if len(sizes) > 1 and max(sizes) / max(min(sizes), 1) >= 10:
            ax.set_xscale("log")
        ax.set_xticks(sizes)
        ax.set_xticklabels([_size_label(s) for s in sizes])
        ax.minorticks_off()
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("context size (characters)")
        ax.set_ylabel("mean score")
        ax.set_title(f"{report.benchmark}: score vs context size (n={report.n}, seed={report.seed})")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best")
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


def _size_label(size: int) -> str:
    if size >= 1_000_000 and size % 100_000 == 0:
        return f"{size / 1_000_000:g}M"
    if size >= 1000 and size % 100 == 0:
        return f"{size / 1000:g}k"
    return str(size)
