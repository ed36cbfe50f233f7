"""Data: the embedded shapes benchmark, ImageNet-style image folders, shipped photographs, and the
seeded choice of an experiment's examples and target classes (:mod:`adv2.data.selection`)."""

from adv2.data.folders import image_folder
from adv2.data.photos import PHOTOS, Photo, imagenet_classes, photo_catalog, photo_names, photos
from adv2.data.selection import correctly_classified_shapes, select_examples, target_classes
from adv2.data.shapes import CLASSES, NUM_CLASSES, shapes

__all__ = ["CLASSES", "NUM_CLASSES", "PHOTOS", "Photo", "correctly_classified_shapes", "image_folder",
           "imagenet_classes", "photo_catalog", "photo_names", "photos", "select_examples", "shapes",
           "target_classes"]
