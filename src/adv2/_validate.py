"""Input checks shared by the public API: a clear ``ValueError`` instead of a wrong result."""

from __future__ import annotations

import functools
from contextlib import contextmanager

import torch


def check_images(x, name: str = "x") -> torch.Tensor:
    """``x`` must be a float tensor ``(N, 3, H, W)``, finite, in ``[0, 1]``."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (N, 3, H, W), got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} must have rank 4 (N, 3, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] != 3:
        raise ValueError(f"{name} must have 3 colour channels (N, 3, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a float tensor with values in [0, 1], got dtype {x.dtype}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch")
    with torch.no_grad():
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or Inf values")
        lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        raise ValueError(
            f"{name} must be in [0, 1] (normalisation lives inside the model), got range [{lo:.4g}, {hi:.4g}]"
        )
    return x


def check_targets(target, n: int, num_classes: int | None, name: str = "target_class") -> torch.Tensor:
    """``target`` must be an integer tensor ``(N,)`` with values in ``[0, num_classes)``."""
    if not isinstance(target, torch.Tensor):
        raise ValueError(f"{name} must be a LongTensor of shape ({n},), got {type(target).__name__}")
    if target.is_floating_point() or target.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor, got dtype {target.dtype}")
    if target.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {tuple(target.shape)}")
    if n and (int(target.min()) < 0 or (num_classes is not None and int(target.max()) >= num_classes)):
        raise ValueError(
            f"{name} out of range: values must be in [0, {num_classes}), got "
            f"[{int(target.min())}, {int(target.max())}]"
        )
    return target.long()


def check_maps(m, n: int, name: str = "target_map") -> torch.Tensor:
    """``m`` must be a finite float tensor ``(N, 1, h, w)`` with values in ``[0, 1]``."""
    if not isinstance(m, torch.Tensor) or m.dim() != 4 or m.shape[0] != n or m.shape[1] != 1:
        shape = tuple(m.shape) if isinstance(m, torch.Tensor) else type(m).__name__
        raise ValueError(f"{name} must be a tensor of shape ({n}, 1, h, w), got {shape}")
    with torch.no_grad():
        if not torch.isfinite(m).all():
            raise ValueError(f"{name} contains NaN or Inf values")
        lo, hi = float(m.min()), float(m.max())
    if lo < 0 or hi > 1:
        raise ValueError(f"{name} must be in [0, 1], got range [{lo:.4g}, {hi:.4g}]")
    return m


def check_positive(value, name: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def num_classes_of(model: torch.nn.Module) -> int | None:
    """Number of output classes if it can be read off the model's head, else ``None``."""
    n = getattr(model, "num_classes", None)
    if isinstance(n, int):
        return n
    last = None
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            last = m
    return last.out_features if last is not None else None


def check_eps(value, name: str = "eps") -> float:
    """An L∞ budget on ``[0, 1]`` images: a number in ``(0, 1]``."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value <= 1:
        raise ValueError(f"{name} must be in (0, 1] for images in [0, 1] (8/255 ≈ 0.031 is usual), got {value!r}")
    return float(value)


def check_dtype(x: torch.Tensor, model: torch.nn.Module, name: str = "x") -> None:
    """``x`` must have the dtype of ``model``'s parameters (a float64 batch for a float32 model
    would fail deep inside torch)."""
    p = next(model.parameters(), None) if isinstance(model, torch.nn.Module) else None
    if p is not None and isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != p.dtype:
        raise ValueError(f"{name} has dtype {x.dtype} but the model's parameters are {p.dtype}; "
                         f"convert the images with x.to({p.dtype})")


@contextmanager
def eval_mode(model: torch.nn.Module):
    """Run ``model`` in eval mode and restore every submodule's own mode afterwards, so an attack or
    an interpreter never rewrites the user's BatchNorm statistics (or drops units)."""
    if not isinstance(model, torch.nn.Module):
        yield model
        return
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def model_call(method):
    """Decorator for ``__call__(self, x, ...)`` of attacks and interpreters: checks that ``x`` has
    the model's dtype and runs ``self.model`` in eval mode, restoring its mode afterwards."""

    @functools.wraps(method)
    def wrapper(self, x, *args, **kwargs):
        check_dtype(x, self.model)
        with eval_mode(self.model):
            return method(self, x, *args, **kwargs)

    return wrapper
