"""Reports: figures, and the HTML / Markdown report of a run (``adv2 report``)."""

from adv2.report.figures import heatmap, maps_figure, summary_figure
from adv2.report.html import build_report

__all__ = ["build_report", "heatmap", "maps_figure", "summary_figure"]
