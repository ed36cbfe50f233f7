"""Reports: figures and tables."""

from adv2.report.figures import maps_figure

__all__ = ["maps_figure"]
