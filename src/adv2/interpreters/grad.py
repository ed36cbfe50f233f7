"""GRAD: vanilla gradient saliency (Simonyan et al.), the back-propagation-guided interpreter."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from adv2.interpreters.base import Interpreter, minmax
from adv2.interpreters.smooth_relu import KINDS, renamed_temperature, smooth_relu


class Grad(Interpreter):
    """Gradient saliency: ``|∂f_c/∂x|``, max over colour channels, optional ``pool``×``pool``
    average pooling, per-image min–max normalised.

    ``f_c`` is the logit of class ``c``. Map: ``(N, 1, H/pool, W/pool)`` in ``[0, 1]``
    (default ``pool=1``: full resolution; the authors pooled 224 → 56 with ``pool=4``).

    For attacks, :meth:`logits_and_map` with ``smooth=True`` computes the map under the
    smooth-ReLU surrogate (see :mod:`adv2.interpreters.smooth_relu`): same logits, smooth
    backward, so the map has non-zero derivatives w.r.t. ``x``. Maps for evaluation
    (``g(x, c)``) always use the exact ReLU.
    """

    name = "grad"

    def __init__(self, model, pool: int = 1, surrogate: str = "sqrt", temperature: float = 1e-4, beta: float = 10.0,
                 *, tau: float | None = None):
        super().__init__(model)
        temperature = renamed_temperature(temperature, tau)
        if not isinstance(pool, int) or pool < 1:
            raise ValueError(f"pool must be a positive integer, got {pool!r}")
        if surrogate not in KINDS:
            raise ValueError(f"unknown surrogate {surrogate!r}; expected one of {KINDS}")
        self.pool, self.surrogate, self.temperature, self.beta = pool, surrogate, temperature, beta

    def logits_and_map(self, x, target, create_graph=False, smooth=False):
        if not x.requires_grad:
            x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            if smooth:
                with smooth_relu(self.surrogate, self.temperature, self.beta):
                    logits = self.model(x)
            else:
                logits = self.model(x)
            score = logits.gather(1, target[:, None]).sum()
            (g,) = torch.autograd.grad(score, x, create_graph=create_graph or smooth)
        m = g.abs().amax(1, keepdim=True)
        if self.pool > 1:
            m = F.avg_pool2d(m, self.pool)
        return logits, minmax(m)

    def __repr__(self):
        return (f"Grad(pool={self.pool}, surrogate={self.surrogate!r}, temperature={self.temperature:g}, "
                f"beta={self.beta:g})")
