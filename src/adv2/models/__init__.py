"""Models: classifiers taking images in [0, 1] (normalisation inside), in eval mode."""

from adv2.models.factory import check_output, from_factory, identity_mismatch, is_factory_ref, model_identity
from adv2.models.loading import EMBEDDED, IMAGENET, TIMM_EXTRA, TIMM_PREFIX, load, weights_dir
from adv2.models.normalized import IMAGENET_MEAN, IMAGENET_STD, Normalized
from adv2.models.zoo import shapes_densenet, shapes_resnet

__all__ = [
    "EMBEDDED",
    "IMAGENET",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Normalized",
    "TIMM_EXTRA",
    "TIMM_PREFIX",
    "check_output",
    "from_factory",
    "identity_mismatch",
    "is_factory_ref",
    "load",
    "model_identity",
    "shapes_densenet",
    "shapes_resnet",
    "weights_dir",
]
