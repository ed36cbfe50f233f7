"""Kept for older scripts: the choice of examples and target classes lives in
:mod:`adv2.data.selection`."""

from adv2.data.selection import correctly_classified_shapes, target_classes

__all__ = ["correctly_classified_shapes", "target_classes"]
