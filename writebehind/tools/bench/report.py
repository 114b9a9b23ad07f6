"""The tables ``python -m writebehind bench`` prints (Markdown), and the cells they share."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .throughput import RAW_COPY, RAW_EXECUTEMANY, Cell

__all__ = ["markdown_table", "rate", "ratio", "throughput_table"]


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[str]], left: int = 1) -> str:
    """A Markdown table; the first ``left`` columns aligned left, the others right."""
    align = ["---" if n < left else "---:" for n in range(len(headers))]
    lines = [headers, align, *rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def rate(value: float) -> str:
    return f"{value:,.0f}"


def ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def throughput_table(cells: Sequence[Cell], path: str) -> str:
    """rows/s of every side per batch size on ``path``, with ratios to both raw loops."""
    rows = []
    for cell in cells:
        if cell.path != path:
            continue
        executemany, copy = cell.rates.get(RAW_EXECUTEMANY), cell.rates.get(RAW_COPY)
        for label, rates in cell.rates.items():
            rows.append(
                [
                    str(cell.batch_size),
                    label,
                    rate(rates.median),
                    f"{rates.spread:.0%}",
                    ratio(rates.ratio(executemany) if executemany else None),
                    ratio(rates.ratio(copy) if copy else None),
                ]
            )
    headers = ["batch", "side", "rows/s", "spread", "× raw executemany", "× raw COPY"]
    return markdown_table(headers, rows, left=2)
