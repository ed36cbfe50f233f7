"""Data: the embedded shapes benchmark and ImageNet-style image folders."""

from adv2.data.folders import image_folder
from adv2.data.shapes import CLASSES, NUM_CLASSES, shapes

__all__ = ["CLASSES", "NUM_CLASSES", "image_folder", "shapes"]
