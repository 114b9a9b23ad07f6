"""``--plot FILE.png``: rows/s against batch size, one line per side, one panel per path."""

from __future__ import annotations

from collections.abc import Sequence

from writebehind.tools.bench.throughput import Cell

__all__ = ["plot_throughput"]


def plot_throughput(cells: Sequence[Cell], filename: str) -> None:
    """Draw the medians of ``cells`` into ``filename`` (any format matplotlib writes, by its
    extension). ImportError naming the 'plot' extra when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # a file, never a window
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(
            "--plot needs matplotlib, the 'plot' extra: pip install 'writebehind[plot]'"
        ) from None
    paths = list(dict.fromkeys(cell.path for cell in cells))
    figure, axes = plt.subplots(
        1, len(paths), figsize=(6.4 * len(paths), 4.8), squeeze=False, sharey=True
    )
    for ax, path in zip(axes[0], paths, strict=True):
        mine = sorted((c for c in cells if c.path == path), key=lambda c: c.batch_size)
        labels = list(dict.fromkeys(label for cell in mine for label in cell.rates))
        for label in labels:
            points = [(c.batch_size, c.rates[label].median) for c in mine if label in c.rates]
            style = "--" if label.startswith("raw") else "-"
            ax.plot(*zip(*points, strict=True), style, marker="o", label=label)
        ax.set_xscale("log")
        sizes = [cell.batch_size for cell in mine]
        ax.set_xticks(sizes, labels=[f"{size:,}" for size in sizes])
        ax.minorticks_off()
        ax.set_ylim(bottom=0)
        ax.yaxis.set_major_formatter(lambda value, _position: f"{value:,.0f}")
        ax.set_xlabel("batch size (rows)")
        ax.set_title(f"{path} path")
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("rows/s (median)")
    axes[0][0].legend()
    figure.tight_layout()
    figure.savefig(filename)
    plt.close(figure)
