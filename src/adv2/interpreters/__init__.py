"""Interpreters: callables ``g(x, target) -> (N, 1, h, w)`` maps in ``[0, 1]``.

``x`` is ``(N, 3, H, W)`` in ``[0, 1]``, ``target`` ``(N,)`` class indices. All are batched,
pure torch, and give the classifier's logits from the same forward pass
(:meth:`Interpreter.logits_and_map`) so attacks can reuse it.
"""

from __future__ import annotations

from adv2.interpreters.base import Interpreter, MapTracker, minmax
from adv2.interpreters.cam import CAM, GradCAM
from adv2.interpreters.captum import CaptumInterpreter, CaptumStyle, explain_func, from_captum
from adv2.interpreters.grad import Grad
from adv2.interpreters.mask import Mask, MaskState
from adv2.interpreters.rts import RTS, RTSNet
from adv2.interpreters.smooth_relu import smooth_relu


def _rts_aid(model, **kwargs) -> RTS:
    """The AID-trained RTS network shipped for an embedded ``model``."""
    return RTS(model, aid=True, **kwargs)


REGISTRY = {"grad": Grad, "cam": CAM, "gradcam": GradCAM, "mask": Mask, "rts": RTS, "rts-aid": _rts_aid}


def get(name: str, model, **kwargs) -> Interpreter:
    """An interpreter by name: ``grad`` | ``cam`` | ``gradcam`` | ``mask`` | ``rts`` | ``rts-aid``
    (the RTS ones: the shipped networks made for an embedded ``model``, or ``checkpoint=PATH``)."""
    key = name.lower() if isinstance(name, str) else name
    if key not in REGISTRY:
        raise ValueError(f"unknown interpreter {name!r}; expected one of {sorted(REGISTRY)}")
    return REGISTRY[key](model, **kwargs)


def names() -> list[str]:
    return list(REGISTRY)


__all__ = [
    "CAM", "CaptumInterpreter", "CaptumStyle", "Grad", "GradCAM", "Interpreter", "MapTracker", "Mask", "MaskState",
    "REGISTRY", "RTS", "RTSNet", "explain_func", "from_captum", "get", "minmax", "names", "smooth_relu",
]
