"""Kept for older scripts: RTS training lives in :mod:`adv2.interpreters.rts.training`."""

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

__all__ = ["FILLS", "RECIPE", "check_recipe", "fill_of", "finish_training", "lr_at", "rts_loss", "run_training",
           "sample_batch", "step_generator", "train_rts"]
