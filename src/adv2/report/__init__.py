"""Reports: figures, tables, and the HTML / Markdown report of a run (``adv2 report``).

The report reads run directories only; it imports nothing of the experiments that write them.
"""

from adv2.report.figures import audit_figure, heatmap, maps_figure, summary_figure
from adv2.report.html import build_report
from adv2.report.tables import format_table, markdown_table

__all__ = ["audit_figure", "build_report", "format_table", "heatmap", "maps_figure", "markdown_table",
           "summary_figure"]
