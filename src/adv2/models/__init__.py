"""Models: classifiers taking images in [0, 1] (normalisation inside), in eval mode."""

from adv2.models.loading import EMBEDDED, IMAGENET, load, weights_dir
from adv2.models.normalized import IMAGENET_MEAN, IMAGENET_STD, Normalized
from adv2.models.zoo import shapes_densenet, shapes_resnet

__all__ = [
    "EMBEDDED",
    "IMAGENET",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Normalized",
    "load",
    "shapes_densenet",
    "shapes_resnet",
    "weights_dir",
]
