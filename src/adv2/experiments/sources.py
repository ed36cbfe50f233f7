"""What an experiment attacks: the classifier of a config's ``model`` and the data of its ``data``.

The data sources and the choice of examples live with the data (:mod:`adv2.data.sources`,
:mod:`adv2.data.selection`); their names stay importable from here.
"""

from __future__ import annotations

from pathlib import Path

from adv2 import models
from adv2.data.selection import check_classes, find_donors, select_examples
from adv2.data.sources import IMAGE_SUFFIXES, FolderData, PhotosData, ShapesData, build_data

__all__ = ["IMAGE_SUFFIXES", "FolderData", "PhotosData", "ShapesData", "build_data", "build_model", "check_classes",
           "find_donors", "model_name", "select_examples"]


def build_model(spec, device: str = "cpu"):
    """The classifier of a config's ``model``: an embedded name, a torchvision architecture name,
    or a mapping ``{name, weights, num_classes, mean, std}`` (see :func:`adv2.models.load`)."""
    if isinstance(spec, str):
        spec = {"name": spec}
    return models.load(spec["name"], weights=spec.get("weights"), num_classes=spec.get("num_classes"),
                       device=device, mean=spec.get("mean"), std=spec.get("std"))


def model_name(spec) -> str:
    """How a run names a model: its ``label`` if given, else its name, with the weights file's
    stem when it has one (``resnet50:robust``), so two checkpoints of one architecture differ."""
    if isinstance(spec, str):
        return spec
    if spec.get("label"):
        return str(spec["label"])
    return spec["name"] + (f":{Path(str(spec['weights'])).stem}" if spec.get("weights") else "")
