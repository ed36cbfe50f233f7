"""MASK: meaningful perturbation (Fong & Vedaldi, 2017), the perturbation-guided interpreter.

Per image, a smooth low-resolution saliency ``s ∈ [0, 1]`` is optimised; upsampled bilinearly
to the image, it says where the image is replaced by a blurred copy (``φ(x; m) = m ⊙ x +
(1 − m) ⊙ blur(x)``, ``m`` the keep-mask). Two games (Fong & Vedaldi, §4):

- ``"delete"`` (the paper's formulation, the default): ``m = 1 − s``; blurring the salient
  region must destroy the class score::

      min_s  λ₁ · mean|s| + λ₂ · TV_β(s) + p_c(φ(x; 1 − s))          (‖1 − m‖₁ = ‖s‖₁)

- ``"preserve"``: ``m = s``; keeping only the salient region must preserve it::

      min_s  λ₁ · mean|s| + λ₂ · TV_β(s) + 1 − p_c(φ(x; s))

``p_c`` is the softmax probability of class ``c``, the perturbed image is jittered by seeded
random shifts each step (the objective averaged over ``jitter_draws`` of them), and ``s`` is
updated by Adam and clipped to ``[0, 1]``. On the embedded
models the deletion game needs a 16×16 mask that starts fully deleted (``init=1``) and is
restored by Adam: from an intact image it finds small adversarial deletions (blurring a patch of
clutter flips these deliberately fragile classifiers) and misses the object. With the defaults
the deletion game points at the object in 92% (ResNet) and 84% (DenseNet) of the first 64 test
images (``benchmarks/mask_pointing.py``), the preservation game in 84%
(docs/notes/2026-12-what-was-tried.md), and ADV² moves the deletion game's map less far from
the benign one. The map is ``s`` itself, ``(N, 1, h, w)`` in ``[0, 1]`` at the mask's resolution.

Every example is optimised on its own (the loss is a sum of per-example terms and each
example's jitter comes from its own seed), so a map never depends on the batch. The optimisation
is warm-startable (:class:`MaskState`: the saliency, Adam's moments and the step count):
:meth:`Mask.solve` continues from a state exactly where it stopped, which the ADV² attack uses
to follow the optimum as the image changes (:class:`MaskTracker`).
"""

from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from adv2._validate import check_images, check_targets, model_call, num_classes_of
from adv2.interpreters.base import Interpreter, MapTracker
from adv2.interpreters.smooth_relu import smooth_relu


def l1_term(s: torch.Tensor) -> torch.Tensor:
    """Area term ``mean |s|`` per example over the saliency's pixels (the deletion game's
    ``‖1 − m‖₁ / (h·w)`` for the keep-mask ``m = 1 − s``); ``(N, 1, h, w)`` → ``(N,)``."""
    return s.abs().flatten(1).mean(1)


def tv_term(m: torch.Tensor, beta: float = 3.0) -> torch.Tensor:
    """Total variation ``mean_u (Δx(u)² + Δy(u)²)^{β/2}`` per example, ``(N, 1, h, w)`` → ``(N,)``.

    ``Δx(u) = m[i, j+1] − m[i, j]`` and ``Δy(u) = m[i+1, j] − m[i, j]`` are taken at the *same*
    location ``u = (i, j)``, over the ``(h − 1) × (w − 1)`` locations that have both (so it is
    right for non-square masks; the authors' code paired transposed differences). A 1e-12 inside
    the power keeps its second derivative finite where the differences vanish (the attack
    differentiates the MASK update); it adds at most 1e-18 per location for β = 3.
    """
    base = m[:, :, :-1, :-1]
    dx = m[:, :, :-1, 1:] - base
    dy = m[:, :, 1:, :-1] - base
    return (dx * dx + dy * dy + 1e-12).pow(beta / 2).flatten(1).mean(1)


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of images ``(N, C, H, W)`` with σ = ``sigma`` pixels (kernel ±3σ, shrunk to
    fit the image: reflect padding needs half the kernel below the side).

    torchvision's ``gaussian_blur`` to rounding, as two 1-D passes: its 2-D kernel (61×61 at
    σ = 10) made the blur, forward and backward, cost seven times a shapes model's pass."""
    k = 2 * int(3 * sigma + 0.5) + 1
    k = min(k, 2 * ((min(x.shape[-2:]) - 1) // 2) + 1)
    r = k // 2
    t = torch.linspace(-r, r, k, dtype=x.dtype, device=x.device)
    w = torch.exp(-0.5 * (t / sigma) ** 2)
    w = w / w.sum()
    c = x.shape[1]
    out = F.pad(x, (r, r, r, r), mode="reflect")
    out = F.conv2d(out, w.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(out, w.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


def jitter_offsets(seeds: list[int], step: int, radius: int, draw: int = 0) -> torch.Tensor:
    """Integer offsets ``(N, 2)`` in ``[−radius, radius]`` for Adam step ``step`` of each example
    (its ``draw``-th shift there, with several jitter draws per step), a pure function of ``(seed,
    step, draw)``: a resumed optimisation sees the jitter it would have seen."""
    out = []
    cache: dict[int, tuple[int, int]] = {}
    for s in seeds:
        if s not in cache:
            r = random.Random(f"adv2-mask-jitter:{s}:{step}" + (f":{draw}" if draw else ""))
            cache[s] = (r.randint(-radius, radius), r.randint(-radius, radius))
        out.append(cache[s])
    return torch.tensor(out, dtype=torch.long)


def shift(x: torch.Tensor, offsets: torch.Tensor, radius: int) -> torch.Tensor:
    """Translate each image of ``x`` ``(N, C, H, W)`` by its ``offsets`` ``(N, 2)`` (dy, dx) pixels,
    filling the border by reflection (differentiable)."""
    if radius == 0:
        return x
    n, c, h, w = x.shape
    xp = F.pad(x, (radius,) * 4, mode="reflect")
    off = offsets.to(x.device)
    rows = torch.arange(h, device=x.device)[None] + radius + off[:, :1]  # (N, H)
    cols = torch.arange(w, device=x.device)[None] + radius + off[:, 1:]  # (N, W)
    # one flat gather per image (its backward a scatter, 3-4x faster than advanced indexing's)
    flat = (rows[:, :, None] * (w + 2 * radius) + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    return xp.flatten(2).gather(2, flat).view(n, c, h, w)


@dataclass
class MaskState:
    """Where a MASK optimisation stands: the saliency ``saliency`` ``(N, 1, h, w)`` in ``[0, 1]``,
    Adam's moment estimates (same shape) and the number of Adam steps taken so far."""

    saliency: torch.Tensor
    exp_avg: torch.Tensor
    exp_avg_sq: torch.Tensor
    step: int = 0

    def detach(self) -> MaskState:
        return MaskState(self.saliency.detach(), self.exp_avg.detach(), self.exp_avg_sq.detach(), self.step)

    def select(self, keep: torch.Tensor) -> MaskState:
        """The state of the examples selected by ``keep`` (a bool or index tensor)."""
        return MaskState(self.saliency[keep], self.exp_avg[keep], self.exp_avg_sq[keep], self.step)


def _straight_through_clamp(m: torch.Tensor) -> torch.Tensor:
    """``m.clamp(0, 1)`` in the forward pass, the identity in the backward pass."""
    return m + (m.clamp(0, 1) - m).detach()


class Mask(Interpreter):
    """Meaningful-perturbation saliency; map ``(N, 1, h, w)`` in ``[0, 1]`` (high = important).

    Parameters (defaults chosen by measurement on the embedded 64×64 models, see docs/notes/2026-12-what-was-tried.md):

    - ``game``: ``"delete"`` (the paper's, default) or ``"preserve"``, see the module docs.
    - ``size``: the mask's side ``h = w`` (default ``min(H // 4, 28)``: 16×16 at 64×64, where 8×8
      pointed at the object far less often, and the authors' 28×28 at 224×224); at most the
      image's side.
    - ``steps``, ``lr``: Adam iterations and learning rate (default 100, 0.1; the authors' 300, 0.1).
    - ``l1``, ``tv``, ``beta``: weights of the area term ``mean|s|`` (:func:`l1_term`) and of
      the smoothness term ``TV_β(s)`` (:func:`tv_term`), and its exponent (3).
    - ``blur_sigma``: σ of the Gaussian blur of the image, in pixels (the authors' 10).
    - ``jitter``: each step the perturbed image is shifted by up to ``jitter`` pixels in each
      direction (reflective border), drawn from the example's seed, so the mask cannot exploit
      single pixels. ``jitter_draws``: the shifts averaged per step (the objective's expectation
      over the jitter, as one batch of that many copies; default 2; 1, a single shift, is Fong &
      Vedaldi's). Two draws and 100 steps make two seeds' maps of an image agree better than one
      draw and 300 steps (noise floor 0.19 / 0.26 of PGD's map distance on the embedded ResNet /
      DenseNet, against 0.21 / 0.41) at two thirds of the cost; ``steps=300, jitter_draws=1`` is
      the authors' method.
    - ``lr_schedule``: ``"constant"`` (the authors') or ``"cosine"`` (down to ``lr / 10`` over
      ``steps``, :meth:`lr_at`).
    - ``init``: the saliency every pixel starts from (1: everything deleted, the default).
    - ``seed``: the jitter seed used by ``g(x, c)``; :meth:`solve` also takes per-example seeds.
    """

    name = "mask"
    GAMES = ("preserve", "delete")
    LR_SCHEDULES = ("constant", "cosine")
    #: ``ADV2(model, Mask(model))``'s budget (the tracker's defaults add two attack seeds, two
    #: unrolled steps and a re-solve every 25 iterations): 50 PGD + 100 joint iterations, the line
    #: search from 0.3; measured on a model it was not tuned on (``benchmarks/mask_defaults.py``).
    #: The paper's 300 + 1000 iterations stay ``ADV2.paper(model, Mask(model))``.
    attack_defaults = {"linf": {"warmup": 50, "steps": 100, "alpha_max": 0.3},
                       "flow": {"warmup": 50, "steps": 100}}

    def __init__(self, model, game: str = "delete", size: int | None = None, steps: int = 100, lr: float = 0.1,
                 l1: float = 0.3, tv: float = 1.0, beta: float = 3.0, blur_sigma: float = 10.0, jitter: int = 1,
                 init: float = 1.0, seed: int = 0, lr_schedule: str = "constant", jitter_draws: int = 2):
        super().__init__(model)
        if game not in self.GAMES:
            raise ValueError(f"unknown mask game {game!r}; expected one of {self.GAMES}")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
            raise ValueError(f"mask size must be a positive integer, got {size!r}")
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"mask steps must be a positive integer, got {steps!r}")
        for name, v in (("lr", lr), ("beta", beta), ("blur_sigma", blur_sigma)):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not v > 0 or v == float("inf"):
                raise ValueError(f"mask {name} must be a positive number, got {v!r}")
        for name, v in (("l1", l1), ("tv", tv)):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not v >= 0 or v == float("inf"):
                raise ValueError(f"mask {name} weight must be a non-negative number, got {v!r}")
        if not isinstance(jitter, int) or isinstance(jitter, bool) or jitter < 0:
            raise ValueError(f"mask jitter must be a non-negative integer, got {jitter!r}")
        if not isinstance(init, (int, float)) or isinstance(init, bool) or not 0 <= init <= 1:
            raise ValueError(f"mask init must be in [0, 1], got {init!r}")
        if not isinstance(jitter_draws, int) or isinstance(jitter_draws, bool) or jitter_draws < 1:
            raise ValueError(f"mask jitter_draws must be a positive integer, got {jitter_draws!r}")
        self.jitter_draws = jitter_draws
        if lr_schedule not in self.LR_SCHEDULES:
            raise ValueError(f"unknown mask lr_schedule {lr_schedule!r}; expected one of {self.LR_SCHEDULES}")
        self.lr_schedule = lr_schedule
        self.game, self.size, self.steps, self.lr = game, size, steps, float(lr)
        self.l1, self.tv, self.beta = float(l1), float(tv), float(beta)
        self.blur_sigma, self.jitter, self.init, self.seed = float(blur_sigma), jitter, float(init), seed
        self.betas, self.adam_eps = (0.9, 0.999), 1e-8

    @property
    def random(self) -> bool:
        """MASK is random through its jitter: another ``seed`` gives another map of the same image."""
        return self.jitter > 0

    def with_seed(self, seed: int) -> Mask:
        """The same MASK with the jitter seed ``seed`` (a defender's run of it)."""
        other = copy.copy(self)
        other.seed = int(seed)
        return other

    # ------------------------------------------------------------------ geometry
    def mask_size(self, x: torch.Tensor) -> tuple[int, int]:
        h, w = x.shape[-2:]
        if self.size is None:  # H/4 up to the paper's 28 (16×16 at 64×64, 28×28 at 224×224)
            return max(1, min(h // 4, 28)), max(1, min(w // 4, 28))
        if self.size > min(h, w):
            raise ValueError(f"mask size {self.size} is larger than the image ({h}×{w})")
        return self.size, self.size

    def lr_at(self, k: int) -> float:
        """Adam's rate at step ``k`` (0-based): ``lr`` throughout (``"constant"``), or (``"cosine"``)
        from ``lr`` down to ``lr / 10`` over ``steps``, then ``lr / 10`` for any step beyond."""
        if self.lr_schedule == "constant":
            return self.lr
        low = self.lr / 10
        return low + 0.5 * (self.lr - low) * (1 + math.cos(math.pi * min(k, self.steps) / self.steps))

    def blurred(self, x: torch.Tensor) -> torch.Tensor:
        """The image with its information removed: a Gaussian blur, σ = ``blur_sigma``."""
        return blur(x, self.blur_sigma)

    def start(self, x: torch.Tensor) -> MaskState:
        """A fresh state: the saliency at ``init`` everywhere, zero moments, step 0."""
        h, w = self.mask_size(x)
        m = torch.full((x.shape[0], 1, h, w), self.init, device=x.device, dtype=x.dtype)
        return MaskState(m, torch.zeros_like(m), torch.zeros_like(m), 0)

    # ------------------------------------------------------------------ optimisation
    def objective(self, x, blur, s, target, offsets, smooth=False) -> torch.Tensor:
        """Per-example MASK objective ``(N,)`` of saliencies ``s`` ``(N, 1, h, w)`` for images
        ``x`` and their blurred versions ``blur``, jittered by ``offsets`` ``(N, 2)``."""
        score = self.score(x, blur, s, target, offsets, smooth)  # first: the order autograd sums gradients in
        return self.l1 * l1_term(s) + self.tv * tv_term(s, self.beta) + score

    def score(self, x, blur, s, target, offsets=None, smooth=False) -> torch.Tensor:
        """The game's classification term ``(N,)`` in ``[0, 1]``: the probability of ``target`` once
        the region ``s`` of ``x`` is blurred (deletion game), or one minus it once everything but
        ``s`` is (preservation game); jittered by ``offsets`` ``(N, 2)`` (``None``: no shift)."""
        up = F.interpolate(s, size=x.shape[-2:], mode="bilinear", align_corners=False)
        keep = up if self.game == "preserve" else 1 - up
        phi = keep * x + (1 - keep) * blur
        if offsets is not None:
            phi = shift(phi, offsets, self.jitter)
        if smooth:
            with smooth_relu():
                logits = self.model(phi)
        else:
            logits = self.model(phi)
        p = torch.softmax(logits, 1).gather(1, target[:, None])[:, 0]
        return 1 - p if self.game == "preserve" else p

    def solve(self, x: torch.Tensor, target: torch.Tensor, state: MaskState | None = None, steps: int | None = None,
              seed: int | torch.Tensor | None = None, create_graph: bool = False,
              smooth: bool = False, blurred: torch.Tensor | None = None) -> tuple[torch.Tensor, MaskState]:
        """Run ``steps`` Adam steps (default ``self.steps``) from ``state`` (default: a fresh start).

        Returns the saliency ``(N, 1, h, w)`` in ``[0, 1]`` and the new state.
        ``seed``: one jitter seed for every example, or ``(N,)`` per-example seeds (default
        ``self.seed``). ``create_graph``: keep the graph through the steps so the map can be
        differentiated w.r.t. ``x`` (the attack's unrolled inner steps; Adam's second moment is
        treated as a constant there and the clip as the identity in the backward pass — both
        exact in the forward pass). ``smooth``: the smooth-ReLU surrogate in the classifier's
        backward pass, for non-vanishing second-order gradients. ``blurred``: :meth:`blurred` of ``x``
        where the caller has it already (default: computed here).
        """
        steps = self.steps if steps is None else steps
        if not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
        n = x.shape[0]
        seed = self.seed if seed is None else seed
        seeds = [int(s) for s in seed.tolist()] if isinstance(seed, torch.Tensor) else [int(seed)] * n
        if len(seeds) != n:
            raise ValueError(f"seed must be an int or a tensor of shape ({n},), got {len(seeds)} seeds")
        state = self.start(x) if state is None else state
        if state.saliency.shape != (n, 1, *self.mask_size(x)):
            raise ValueError(f"state saliency has shape {tuple(state.saliency.shape)}, "
                             f"expected {(n, 1, *self.mask_size(x))}")
        b1, b2 = self.betas
        m, v1, v2, k = state.saliency, state.exp_avg, state.exp_avg_sq, state.step
        if not create_graph:
            x = x.detach()
            blurred = None if blurred is None else blurred.detach()
        with torch.enable_grad():
            blur = self.blurred(x) if blurred is None else blurred
            for _ in range(steps):
                if not create_graph:
                    m = m.detach().requires_grad_(True)
                elif not m.requires_grad:
                    m = m.requires_grad_(True)
                j = self.jitter_draws if self.jitter > 0 else 1
                if j == 1:
                    offsets = jitter_offsets(seeds, k, self.jitter)
                    loss = self.objective(x, blur, m, target, offsets, smooth=smooth).sum()
                else:  # the expectation over j shifts, as one batch of j copies
                    offsets = torch.cat([jitter_offsets(seeds, k, self.jitter, d) for d in range(j)])
                    rep = (j, 1, 1, 1)
                    loss = self.objective(x.repeat(rep), blur.repeat(rep), m.repeat(rep), target.repeat(j), offsets,
                                          smooth=smooth).view(j, n).mean(0).sum()
                (g,) = torch.autograd.grad(loss, m, create_graph=create_graph)
                lr = self.lr_at(k)
                k += 1
                v1 = b1 * v1 + (1 - b1) * g
                v2 = b2 * v2 + (1 - b2) * (g * g).detach()
                denom = (v2 / (1 - b2**k)).sqrt() + self.adam_eps
                raw = m - lr * (v1 / (1 - b1**k)) / denom
                m = _straight_through_clamp(raw) if create_graph else raw.clamp(0, 1)
        new = MaskState(m, v1, v2, k)
        if not create_graph:
            new = new.detach()
        return new.saliency, new

    def logits_and_map(self, x, target, create_graph=False, smooth=False):
        with torch.set_grad_enabled(create_graph or torch.is_grad_enabled()):
            logits = self.model(x)
        sal, _ = self.solve(x, target, create_graph=create_graph, smooth=smooth)
        return logits, sal

    def validate(self, x: torch.Tensor) -> None:
        self.mask_size(x)

    @model_call
    def __call__(self, x, target):
        check_images(x)
        target = check_targets(target, x.shape[0], num_classes_of(self.model), name="target")
        self.validate(x)
        create_graph = torch.is_grad_enabled() and x.requires_grad
        return self.solve(x, target, create_graph=create_graph)[0]

    def tracker(self, n_step: int = 2, n_reset: int = 25, n_seeds: int = 2, mask_loss: str = "unroll",
                unroll_draws: int = 1, unroll_seeds: int = 1, rotate_seeds: bool = True,
                game_term: float | None = None) -> MaskTracker:
        """The bilevel scheme of the ADV² loop (:class:`MaskTracker`): ``n_step`` unrolled Adam steps
        of MASK per joint iteration, a from-scratch re-solve every ``n_reset`` iterations, the
        expectation over ``n_seeds`` jitter seeds, ``unroll_draws`` jitter draws per unrolled step
        (the re-solves use the interpreter's ``jitter_draws``), ``unroll_seeds`` of the seeds'
        running states unrolled per iteration, in turn; ``rotate_seeds``: each re-solve draws new
        jitter seeds, so that the keep-best choice is judged by seeds the attack has not fitted;
        ``game_term``: the weight of MASK's game played at the target map on the adversarial image
        (:class:`MaskTracker`; ``None``: :attr:`MaskTracker.GAME_TERM` when unrolling, 0 with
        ``mask_loss="objective"``; 0 leaves it out, as ``ADV2.paper`` does); ``mask_loss="objective"`` is the
        authors' shortcut. The defaults are the measured robust
        scheme (the paper's one fixed seed, four steps, a re-solve every 50 and no game term are
        ``ADV2.paper``'s).
        ``ADV2(model, Mask(model).tracker(n_seeds=8))`` attacks with other settings."""
        return MaskTracker(self, n_step=n_step, n_reset=n_reset, mode=mask_loss, n_seeds=n_seeds,
                           unroll_draws=unroll_draws, unroll_seeds=unroll_seeds, rotate_seeds=rotate_seeds,
                           game_term=game_term)

    def __repr__(self):
        return (f"Mask(game={self.game!r}, size={self.size}, steps={self.steps}, lr={self.lr}, "
                f"lr_schedule={self.lr_schedule!r}, l1={self.l1}, tv={self.tv}, beta={self.beta}, "
                f"blur_sigma={self.blur_sigma}, jitter={self.jitter}, jitter_draws={self.jitter_draws}, "
                f"init={self.init}, seed={self.seed})")


class MaskTracker(MapTracker):
    """The ADV² loop's view of MASK (the paper's bilevel scheme).

    Keeps a running MASK state for the current adversarial image. Every ``n_reset`` joint
    iterations (and at the last) it re-solves MASK from scratch on the 8-bit image (quantised
    inside the ε-ball): that state replaces the running one, and the image is a keep-best
    candidate, judged by the distance of this fresh map to the target map. In between, each
    iteration takes ``n_step`` Adam steps from the running state with the graph kept, so the
    interpretation loss is differentiated through them.

    The attack's jitter seeds are ``interpreter.seed + 1, …, interpreter.seed + n_seeds``: the
    maps reported afterwards (``seed``) use a jitter the attack never saw. With ``n_seeds > 1``
    the tracker keeps one running state per seed (each re-solve is one batched solve of
    ``n_seeds × N`` images) and the keep-best distance is the mean over the seeds: an expectation
    over MASK's jitter, so the example does not fit one jitter sequence (with one seed the maps
    under that seed end up far closer to the target than under any other; docs/results.md).
    Each joint iteration unrolls ``unroll_seeds`` of the running states, taking the seeds in
    turn (iteration ``t`` unrolls seeds ``t·j … t·j + j − 1`` mod ``n_seeds``), and its loss is
    the mean over those: a stochastic estimate of the expectation at the cost of ``j`` seeds.
    The unrolled steps average ``unroll_draws`` jitter shifts each.

    With ``rotate_seeds`` (the default) fresh solve ``r`` and the unrolled steps after it use the
    seeds ``seed + r·ROTATE_STRIDE + i``: the image is judged for keep-best by seeds it was not
    optimised against. With fixed seeds the attack fits their jitter sequences, and on some images
    the maps under those seeds reach the target while any other seed's map is as far as PGD's or
    further (docs/notes/2026-12-what-was-tried.md, "Rotating the attack's seeds").

    ``game_term`` κ > 0 adds ``κ · score(x̂, m_t)`` to the interpretation loss: MASK's game played on
    ``x̂`` at the target map (:meth:`Mask.score`; deletion game: the target class's probability once
    the target map's region of ``x̂`` is blurred, no jitter), for objectives that bring the map to
    ``m_t`` (ADV², Manipulate; not Fragility, which pushes it away). MASK finds the region whose blurring
    removes the class; this term puts the image's evidence for the target class where the target
    map is, a first-order signal beside the unrolled steps' (docs/notes/2026-12-what-was-tried.md,
    "DenseNet's L∞ figure"). The default (``None``) is :attr:`GAME_TERM` = 0.1 with unrolled steps
    and 0 with ``mode="objective"``; ``ADV2.paper`` sets 0.

    ``mode="objective"`` is the authors' cheaper route instead of the unrolled steps: the
    interpretation loss is MASK's own objective evaluated at the target map on ``x̂`` (so that
    ``m_t`` becomes cheap for MASK there); resets and keep-best are the same. Measured worse
    (docs/notes/2026-12-what-was-tried.md), kept for comparison.
    """

    MODES = ("unroll", "objective")
    #: ``game_term``'s default with unrolled steps: judged 0.489 → 0.351 (shapes-resnet) and
    #: 0.763 → 0.687 (shapes-densenet) on 32 images at the demo's budget (docs/results.md).
    GAME_TERM = 0.1

    def __init__(self, interpreter: Mask, n_step: int = 2, n_reset: int = 25, seed: int | None = None,
                 mode: str = "unroll", n_seeds: int = 2, unroll_draws: int = 1, unroll_seeds: int = 1,
                 rotate_seeds: bool = True, game_term: float | None = None):
        if mode not in self.MODES:
            raise ValueError(f"unknown mask_loss {mode!r}; expected one of {self.MODES}")
        for name, v in (("n_step", n_step), ("n_reset", n_reset), ("n_seeds", n_seeds), ("unroll_draws", unroll_draws),
                        ("unroll_seeds", unroll_seeds)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be an integer ≥ 1, got {v!r}")
        if unroll_seeds > n_seeds:
            raise ValueError(f"unroll_seeds ({unroll_seeds}) cannot exceed n_seeds ({n_seeds})")
        self.g, self.n_step, self.n_reset, self.mode, self.n_seeds = interpreter, n_step, n_reset, mode, n_seeds
        self.seed = interpreter.seed + 1 if seed is None else seed
        self.unroll_draws, self.unroll_seeds = unroll_draws, unroll_seeds
        self.unrolled = copy.copy(interpreter)  # the unrolled steps' MASK: unroll_draws shifts per step
        self.unrolled.jitter_draws = unroll_draws
        self.states: list[MaskState] = []
        if not isinstance(rotate_seeds, bool):
            raise ValueError(f"rotate_seeds must be True or False, got {rotate_seeds!r}")
        self.rotate_seeds = rotate_seeds
        if game_term is None:
            game_term = 0.0 if mode == "objective" else self.GAME_TERM
        if isinstance(game_term, bool) or not isinstance(game_term, (int, float)) or not 0 <= game_term < math.inf:
            raise ValueError(f"game_term must be a finite number ≥ 0, got {game_term!r}")
        if game_term and mode == "objective":
            raise ValueError("game_term adds MASK's game at the target map to the unrolled steps' loss; "
                             "mask_loss='objective' plays that game instead of unrolling (use one of them)")
        self.game_term = float(game_term)
        self.resets, self.base = 0, self.seed

    #: With ``rotate_seeds``, fresh solve ``r`` uses the seeds ``seed + r·ROTATE_STRIDE + i``: far from the
    #: small seeds people choose as defender seeds.
    ROTATE_STRIDE = 1_000_000

    def seeds_at(self, r: int) -> int:
        """The first jitter seed of fresh solve ``r`` (0, 1, ...) and the unrolled steps after it."""
        return self.seed + (r * self.ROTATE_STRIDE if self.rotate_seeds else 0)

    def attack_seeds(self, steps: int) -> set[int]:
        """Every jitter seed an attack of ``steps`` joint iterations uses (for checks that a
        defender's seeds are unseen)."""
        resets = steps // self.n_reset + 1 + (1 if steps % self.n_reset else 0)
        rounds = resets if self.rotate_seeds else 1
        return {self.seeds_at(r) + i for r in range(rounds) for i in range(self.n_seeds)}

    def options(self) -> dict:
        return {"n_step": self.n_step, "n_reset": self.n_reset, "n_seeds": self.n_seeds, "mask_loss": self.mode,
                "unroll_draws": self.unroll_draws, "unroll_seeds": self.unroll_seeds, "rotate_seeds": self.rotate_seeds,
                "game_term": self.game_term}

    def reset(self) -> None:
        self.states = []
        self.resets = 0
        self.base = self.seed

    def _distance(self, ctx, sal: torch.Tensor) -> torch.Tensor:
        """Mean over the seeds of ``ctx.distance`` of stacked maps ``(k·N, 1, h, w)`` (seed-major) → ``(N,)``."""
        n = ctx.x.shape[0]
        return torch.stack([ctx.distance(part) for part in sal.split(n)]).mean(0)

    def _solve(self, g: Mask, x: torch.Tensor, ctx, chosen: list[int], states=None, blurred=None, **kw):
        """Solve the seeds ``chosen`` (indices into ``0..n_seeds−1``) on ``x`` ``(N, ...)``, from their
        ``states`` (a fresh start if ``None``), as one batch of ``len(chosen) × N`` copies (``x`` is
        blurred once, or ``blurred`` is its blur)."""
        n, k = x.shape[0], len(chosen)
        seeds = torch.tensor([self.base + i for i in chosen]).repeat_interleave(n)
        state = None
        if states is not None:
            state = MaskState(*(torch.cat([getattr(st, f) for st in states])
                                for f in ("saliency", "exp_avg", "exp_avg_sq")), states[0].step)
        blurred = g.blurred(x) if blurred is None else blurred
        sal, new = g.solve(x.repeat(k, 1, 1, 1), ctx.target_class.repeat(k), state=state, seed=seeds,
                           blurred=blurred.repeat(k, 1, 1, 1), **kw)
        new = new.detach()
        return sal, [new.select(slice(i * n, (i + 1) * n)) for i in range(k)]

    def __call__(self, ctx, x_adv: torch.Tensor, t: int, last: bool):
        """One joint iteration ``t``: ``(logits, d, candidate, aux)`` as :class:`~adv2.interpreters.base.MapTracker`."""
        n, k = x_adv.shape[0], self.n_seeds
        cand = None
        if t % self.n_reset == 0 or last:
            xq = ctx.quantize(x_adv.detach())
            with torch.no_grad():
                ok = self.g.model(xq).argmax(1) == ctx.target_class
            self.base = self.seeds_at(self.resets)
            self.resets += 1
            fresh, self.states = self._solve(self.g, xq, ctx, list(range(k)))
            cand = (xq, self._distance(ctx, fresh), ok)
        if last:
            return None, None, cand, None
        logits = self.g.model(x_adv)
        if self.mode == "objective":  # the authors' shortcut: make m_t cheap for MASK at x̂, no unrolling
            ctx.distance(self.states[0].saliency)  # brings ctx.m_t to the mask's size
            blurred = self.g.blurred(x_adv)
            obj = 0
            for s in range(self.seed, self.seed + k):
                offsets = jitter_offsets([s] * n, 10**6 + t, self.g.jitter)
                obj = obj + self.g.objective(x_adv, blurred, ctx.m_t, ctx.target_class, offsets, smooth=True)
            return logits, obj / k, cand, None
        # unroll_seeds of the k seeds' running states, in turn
        j = self.unroll_seeds
        chosen = sorted((t * j + i) % k for i in range(j))
        blurred = self.g.blurred(x_adv)  # shared by the unrolled steps and the game term
        groups: dict[int, list[int]] = {}
        for i in chosen:  # seeds whose states have taken the same number of steps share a batch
            groups.setdefault(self.states[i].step, []).append(i)
        parts = []
        for idx in groups.values():
            sal, new = self._solve(self.unrolled, x_adv, ctx, idx, [self.states[i] for i in idx], blurred=blurred,
                                   steps=self.n_step, create_graph=True, smooth=True)
            for i, st in zip(idx, new, strict=True):
                self.states[i] = st
            parts.append(sal)
        d = self._distance(ctx, torch.cat(parts))
        if self.game_term and ctx.objective.towards_target:  # MASK's game at m_t on x̂ (m_t at the mask's size by now)
            d = d + self.game_term * self.g.score(x_adv, blurred, ctx.m_t, ctx.target_class)
        return logits, d, cand, None
