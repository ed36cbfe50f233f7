"""Step rules of the ADV² loop: how the image moves given the gradient of the joint loss.

- :class:`SignStep`: ``x̂ ← Π(x̂ − α_t · sign(∇))``, the PGD step (GRAD, CAM, Grad-CAM).
- :class:`SearchStep`: a step along the per-example L2-normalised gradient whose length is
  found by halving ``alpha_max`` until the image stays classified as the target (MASK, whose
  map moves by small steps that a sign step would overshoot).

``Π`` projects onto the ε-ball around the original image intersected with ``[0, 1]``. Every rule
is per example: no step length or acceptance test looks at another example of the batch.
"""

from __future__ import annotations

import torch

from adv2.attacks.pgd import project


class SignStep:
    """Signed gradient step of size ``alpha_at(t)``, then projection."""

    name = "sign"

    def __init__(self, alpha_at):
        self.alpha_at = alpha_at

    def __call__(self, ctx, x_adv: torch.Tensor, grad: torch.Tensor, t: int, logits=None) -> torch.Tensor:
        return project(x_adv.detach() - self.alpha_at(t) * grad.sign(), ctx.x, ctx.eps)


class SearchStep:
    """Per-example line search on ``[0, alpha_max]`` along ``−∇/‖∇‖₂``.

    Tries ``alpha_max``, then halves it up to ``n_bs`` times, and accepts per example the
    largest tried step whose projected image ``model`` still classifies as the target class;
    an example for which none is accepted does not move. An example that is not classified as
    the target to begin with has nothing to keep: it takes the full ``alpha_max`` step (the
    cross-entropy in the gradient pulls it towards the target). ``alpha`` is an L2 length in
    pixel units of ``[0, 1]`` images.
    """

    name = "search"

    def __init__(self, model, alpha_max: float = 0.08, n_bs: int = 12):
        self.model, self.alpha_max, self.n_bs = model, alpha_max, n_bs

    @torch.no_grad()
    def __call__(self, ctx, x_adv: torch.Tensor, grad: torch.Tensor, t: int, logits=None) -> torch.Tensor:
        """``logits``: the model's logits of ``x_adv`` if the caller has them (saves a forward)."""
        x_adv = x_adv.detach()
        norm = grad.flatten(1).norm(dim=1).clamp_min(1e-30)[:, None, None, None]
        direction = grad / norm
        out = x_adv.clone()
        logits = self.model(x_adv) if logits is None else logits
        held = logits.argmax(1) == ctx.target_class
        free = (~held).nonzero()[:, 0]
        out[free] = project(x_adv[free] - self.alpha_max * direction[free], ctx.x[free], ctx.eps)
        pending = held.nonzero()[:, 0]
        alpha = self.alpha_max
        for _ in range(self.n_bs + 1):
            if pending.numel() == 0:
                break
            cand = project(x_adv[pending] - alpha * direction[pending], ctx.x[pending], ctx.eps)
            ok = self.model(cand).argmax(1) == ctx.target_class[pending]
            out[pending[ok]] = cand[ok]
            pending = pending[~ok]
            alpha /= 2
        return out
