"""RTS: real-time saliency (Dabkowski & Gal, 2017), the model-guided interpreter.

- :mod:`~adv2.interpreters.rts.network`: the saliency network :class:`RTSNet` and its file format
  (:func:`save_rts`, :func:`read_rts`, the classifier :func:`fingerprint`);
- :mod:`~adv2.interpreters.rts.interpreter`: the interpreter :class:`RTS` (shipped networks for
  the embedded models, ``RTS.load("shapes-resnet")``) and its ADV² tracker;
- :mod:`~adv2.interpreters.rts.training`: training a network for a classifier (:func:`train_rts`,
  ``adv2 train-rts``) on the shared seeded, resumable loop (:mod:`adv2.models.training_loop`).
"""

from adv2.interpreters.rts.interpreter import RTS, RTSTracker, shipped_path, weights_dir
from adv2.interpreters.rts.network import RTS_MEAN, RTS_STD, RTSNet, fingerprint, read_rts, save_rts, tensor_hash
from adv2.interpreters.rts.training import (
    FILLS,
    RECIPE,
    check_recipe,
    fill_of,
    finish_training,
    lr_at,
    rts_loss,
    run_training,
    sample_batch,
    step_generator,
    train_rts,
)

__all__ = [
    "FILLS", "RECIPE", "RTS", "RTSNet", "RTSTracker", "RTS_MEAN", "RTS_STD", "check_recipe", "fill_of",
    "fingerprint", "finish_training", "lr_at", "read_rts", "rts_loss", "run_training", "sample_batch", "save_rts",
    "shipped_path", "step_generator", "tensor_hash", "train_rts", "weights_dir",
]
