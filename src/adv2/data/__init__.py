"""Data: the embedded shapes benchmark, ImageNet-style image folders and shipped photographs."""

from adv2.data.folders import image_folder
from adv2.data.photos import PHOTOS, Photo, imagenet_classes, photo_catalog, photo_names, photos
from adv2.data.shapes import CLASSES, NUM_CLASSES, shapes

__all__ = ["CLASSES", "NUM_CLASSES", "PHOTOS", "Photo", "image_folder", "imagenet_classes", "photo_catalog",
           "photo_names", "photos", "shapes"]
