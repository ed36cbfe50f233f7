"""Tables of summary rows: fixed-width text (the terminal) and Markdown (``summary.md``, ``report.md``)."""

from __future__ import annotations

#: The columns a run's summary table shows when its ``summary.json`` does not name them.
DEFAULT_KEYS = ("attack", "interpreter", "n", "success_rate", "confidence", "l1", "l2", "iou")


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def format_table(rows: list[dict], keys=DEFAULT_KEYS) -> str:
    """A fixed-width text table of summary rows."""
    cells = [[k for k in keys]] + [[_fmt(r.get(k)) for k in keys] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(keys))]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(keys))) for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: list[dict], keys=DEFAULT_KEYS) -> str:
    """A Markdown table of summary rows (``-`` for a missing value)."""
    out = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    out += ["| " + " | ".join(_fmt(r.get(k)) for k in keys) + " |" for r in rows]
    return "\n".join(out)
