"""The interpreter interface and helpers shared by all interpreters."""

from __future__ import annotations

import warnings

import torch
from torch import nn

from adv2._validate import check_images, check_targets, model_call, num_classes_of
from adv2.interpreters.paper import paper_budget
from adv2.interpreters.smooth_relu import COVERED
from adv2.models.factory import unwrap

__all__ = ["FlatMapWarning", "Interpreter", "MapTracker", "minmax", "unwrap", "warn_if_flat"]


def minmax(m: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Per-example min–max normalisation of maps ``(N, 1, h, w)`` to ``[0, 1]`` (differentiable)."""
    flat = m.flatten(1)
    lo = flat.min(1).values[:, None, None, None]
    hi = flat.max(1).values[:, None, None, None]
    return (m - lo) / (hi - lo).clamp_min(eps)


class Interpreter:
    """An interpreter ``g``: ``g(x, target) -> (N, 1, h, w)`` maps in ``[0, 1]``.

    ``x``: ``(N, 3, H, W)`` in ``[0, 1]``; ``target``: ``(N,)`` class indices. Subclasses
    implement :meth:`logits_and_map`, which returns the classifier's logits *and* the map
    from one forward pass, so attacks can reuse it. ``name`` is the interpreter's CLI name.
    """

    name = "interpreter"
    #: Whether two runs on the same image may give different maps (MASK's jitter): such an
    #: interpreter is judged over defender seeds (:func:`adv2.metrics.judged_ratio`).
    random = False

    def __init__(self, model: nn.Module):
        self.model = model

    @model_call
    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_images(x)
        target = check_targets(target, x.shape[0], num_classes_of(self.model), name="target")
        create_graph = torch.is_grad_enabled() and x.requires_grad
        return self.logits_and_map(x, target, create_graph=create_graph)[1]

    def logits_and_map(
        self, x: torch.Tensor, target: torch.Tensor, create_graph: bool = False, smooth: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(N, K)`` of ``x`` and the maps ``(N, 1, h, w)`` for ``target``.

        ``create_graph``: keep the graph so the map can be differentiated w.r.t. ``x``.
        ``smooth``: use the interpreter's surrogate for second-order gradients (attacks only).
        """
        raise NotImplementedError

    def validate(self, x: torch.Tensor) -> None:
        """Raise a ``ValueError`` if this interpreter cannot run on images shaped like ``x``
        (called before long work starts; the default accepts any size)."""

    def tracker(self, **options) -> MapTracker:
        """The ADV² loop's view of this interpreter (a small strategy object, see :class:`MapTracker`).

        ``options`` are interpreter-specific attack settings (MASK: ``n_step``, ``n_reset``,
        ``n_seeds``, ``mask_loss``; RTS: ``lam_enc``); an interpreter without such settings
        refuses them. ``ADV2(model, g.tracker(...))`` attacks with them."""
        if options:
            raise ValueError(f"the {self.name} interpreter takes no attack options, got {sorted(options)} (MASK's "
                             "tracker takes n_step, n_reset, n_seeds, mask_loss; RTS's lam_enc)")
        return MapTracker(self)

    #: ``ADV2(model, g)``'s budget where it differs from the paper's row, per perturbation
    #: (``{"linf": {...}, "flow": {...}}``, read by :meth:`attack_budget`); empty: the paper's.
    attack_defaults: dict = {}

    def attack_budget(self, perturbation: str = "linf") -> dict:
        """What ``ADV2(model, g)`` runs when not told otherwise: the paper's row
        (:meth:`paper_budget`) with this interpreter's :attr:`attack_defaults` on top. Only MASK
        differs (a cheaper, robust scheme); ``ADV2.paper(model, g)`` runs the paper's row."""
        return {**self.paper_budget(perturbation), **self.attack_defaults.get(perturbation, {})}

    def paper_budget(self, perturbation: str = "linf") -> dict:
        """The paper's attack budget for this interpreter (Table 10 for ``"linf"``, 11 for ``"flow"``):
        ``steps``, ``warmup``, ``lam`` and, where the paper sets them, ``step_rule``, ``tau`` and
        tracker options (:mod:`adv2.interpreters.paper`). Wrappers name their family in
        ``defaults_like``; an interpreter the paper has no row for gets a ``ValueError``."""
        return paper_budget(getattr(self, "defaults_like", self.name), perturbation)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class MapTracker:
    """How the ADV² loop sees an interpreter at each joint iteration.

    ``tracker(ctx, x_adv, t, last)`` returns ``(logits, d, candidate, aux)``:

    - ``logits`` ``(N, K)`` of ``x_adv`` and ``d`` ``(N,)`` the interpretation loss (the mean
      squared error ``ctx.distance`` to the target map), both differentiable w.r.t. ``x_adv``
      (``None`` at the ``last`` iteration, which only evaluates);
    - ``candidate``: ``None`` or ``(x_c, d_c, ok)``, an image the loop may keep as its result
      if ``ok`` (classified as the target) and ``d_c`` is the smallest distance seen so far;
    - ``aux``: ``None`` or ``(N,)`` an extra loss term added as it is (RTS: its encoder-head
      cross-entropy towards the target class).

    This default recomputes the map from scratch at every iteration (``logits_and_map`` with the
    interpreter's surrogate) and offers every iterate as a candidate. Interpreters whose maps are
    an optimisation (MASK) keep a state across iterations instead.
    """

    def __init__(self, interpreter: Interpreter):
        self.g = interpreter

    def options(self) -> dict:
        """The tracker's settings that change results (empty here)."""
        return {}

    def reset(self) -> None:
        """Forget any state of an earlier attack call (called at the start of each)."""

    def __repr__(self):
        body = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({self.g!r}{', ' if body else ''}{body})"

    def __call__(self, ctx, x_adv: torch.Tensor, t: int, last: bool):
        logits, m = self.g.logits_and_map(x_adv, ctx.target_class, create_graph=not last, smooth=True)
        d = ctx.distance(m)
        if t == 0 and not last:
            warn_if_flat(m, x_adv, self.g)
        with torch.no_grad():
            ok = logits.argmax(1) == ctx.target_class
        return logits, d, (x_adv.detach(), d.detach(), ok), None


class FlatMapWarning(UserWarning):
    """The interpretation loss has a zero derivative w.r.t. the input: ADV²'s map term cannot act."""


def warn_if_flat(m: torch.Tensor, x_adv: torch.Tensor, interpreter) -> bool:
    """Warn (:class:`FlatMapWarning`) and return ``True`` when the maps ``m`` ``(N, 1, h, w)``
    (computed from ``x_adv`` as the attack computes them) have an all-zero derivative w.r.t.
    ``x_adv`` (probed through ``Σ m²``) for every example: the map term of ADV² would do nothing
    and the attack would silently be PGD. Typical cause: GRAD on a network
    whose piecewise-linear activations the smooth surrogate does not cover
    (:mod:`adv2.interpreters.smooth_relu` lists those it does)."""
    if not (m.requires_grad and x_adv.requires_grad):
        flat = True
    else:
        (g,) = torch.autograd.grad(m.square().sum(), x_adv, retain_graph=True, allow_unused=True)
        flat = g is None or not bool(g.detach().ne(0).any())
    if flat:
        warnings.warn(
            f"the {getattr(interpreter, 'name', type(interpreter).__name__)} map of this model has a zero derivative "
            "w.r.t. the input, so ADV²'s map term does nothing and the attack is PGD. For GRAD this means the "
            "network's activations are piecewise linear ones the smooth surrogate does not cover (covered: "
            f"{', '.join(COVERED)}); use a covered activation or pass a differentiable interpreter.",
            FlatMapWarning, stacklevel=3)
    return flat
