"""ADV²: adversarial inputs that fool the classifier *and* keep the interpreter's map.

One loop for every interpreter: a perturbation model (the L∞ box, or StAdv's flow field:
:class:`BoxPerturbation`, :class:`FlowPerturbation`) × the prediction loss (cross-entropy
towards ``c_t``) × the interpretation loss (mean squared error between the map and the target
map, weighted by a λ schedule) × the step rule (:mod:`adv2.attacks.steps`: signed steps, or
MASK's per-example line search; Adam for the flow).
Interpreter-specific needs are small strategy objects the interpreter provides
(:meth:`~adv2.interpreters.Interpreter.tracker`): the GRAD surrogate lives in
``logits_and_map(smooth=True)``, MASK's running mask and resets in its tracker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from adv2._validate import (
    check_eps,
    check_images,
    check_maps,
    check_positive,
    check_targets,
    model_call,
    num_classes_of,
)
from adv2.attacks.flow import flow_loss, warp_unchecked
from adv2.attacks.pgd import pgd_step, quantize
from adv2.attacks.result import AttackResult, finish
from adv2.attacks.steps import SearchStep, SignStep
from adv2.metrics import topk_mask

#: Paper defaults (Table 10, PGD-based ADV²) per interpreter: joint iterations and λ on the
#: per-pixel mean squared error (= the paper's λ on the summed error × its map size: GRAD
#: 0.007 × 56², CAM 0.204 × 7²). ``warmup``: PGD iterations on ℓ_prd before the joint stage.
PAPER_DEFAULTS = {
    "grad": dict(steps=800, warmup=300, lam=0.007 * 56 * 56),
    "cam": dict(steps=1200, warmup=300, lam=0.204 * 7 * 7),
    "gradcam": dict(steps=1200, warmup=300, lam=0.204 * 7 * 7),
    # MASK (Table 10): 1000 iterations, n_step 4, n_reset 50, line search α_max 0.08 with 12
    # halvings. The paper gives no λ for it; 10 weights the mean squared error of 1 − m maps.
    "mask": dict(steps=1000, warmup=300, lam=10.0, step_rule="search", n_step=4, n_reset=50),
    # RTS (Table 10): 1200 iterations, λ₁ = 0.002 on the summed error at 56×56, λ₂ = 0.1 on the
    # RTS encoder head's cross-entropy towards c_t.
    "rts": dict(steps=1200, warmup=300, lam=0.002 * 56 * 56, lam_enc=0.1),
}
PAPER_DEFAULTS["rts-aid"] = PAPER_DEFAULTS["rts"]
#: StAdv-based ADV² (Table 11): joint iterations, λ (scaled to the per-pixel mean as above:
#: GRAD 0.023 × 56², CAM 0.653 × 7², RTS λ₁ 0.0408 × 56²) and τ on the flow loss; no PGD warm
#: start. Table 11 gives DenseNet another RTS λ₁ (0.0612) than ResNet; these are the ResNet
#: values (pass ``lam`` to change). MASK: the paper's λ (500) is on its own loss scale, so MASK
#: keeps its L∞ λ; and its τ is 0.0005 like the others, not Table 11's 0.004 / 0.005: at
#: τ = 0.004 the flows were so small (0.03 px) that 8-bit rounding undid the attack for 9% of
#: the examples (benchmarks/stadv.py, shapes-resnet, 32 images).
FLOW_DEFAULTS = {
    "grad": dict(steps=800, warmup=0, lam=0.023 * 56 * 56, tau=5e-4),
    "cam": dict(steps=600, warmup=0, lam=0.653 * 7 * 7, tau=5e-4),
    "gradcam": dict(steps=600, warmup=0, lam=0.653 * 7 * 7, tau=5e-4),
    "mask": dict(steps=1000, warmup=0, lam=PAPER_DEFAULTS["mask"]["lam"], tau=5e-4, n_step=4, n_reset=50),
    "rts": dict(steps=600, warmup=0, lam=0.0408 * 56 * 56, tau=5e-4, lam_enc=0.1),
}
FLOW_DEFAULTS["rts-aid"] = FLOW_DEFAULTS["rts"]
PERTURBATIONS = ("linf", "flow")
#: What the loop optimises (the audit's names): ADV² (reach c_t, keep the map at m_t);
#: ``manipulate`` (Dombrowski et al. 2019: keep the prediction, reach m_t); ``fragility``
#: (Ghorbani et al. 2019: keep the prediction, push the map away from the benign one).
OBJECTIVES = ("adv2", "manipulate", "fragility")
MEASURES = ("topk", "center_of_mass", "l1")
SCHEDULES = ("linear", "constant")
STEP_RULES = ("sign", "search")
MASK_LOSSES = ("unroll", "objective")
ALPHA_SCHEDULES = ("constant", "cosine", "linear")
#: With ``lam_adapt=γ`` an example's λ multiplier is divided by ``γ ** LAM_ADAPT_DOWN`` at an
#: iteration that is not classified as ``c_t`` (one loss undoes this many gains) and kept in
#: ``LAM_SCALE_RANGE``.
LAM_ADAPT_DOWN = 20
LAM_SCALE_RANGE = (1e-3, 1e6)


def decayed(base: float, t: int, steps: int, schedule: str) -> float:
    """``base`` at joint iteration ``t`` of ``steps`` under ``schedule`` (:data:`ALPHA_SCHEDULES`):
    constant, or decaying from ``base`` to ``base/10`` (``"cosine"``, ``"linear"``)."""
    if schedule == "constant" or steps <= 1:
        return base
    frac = t / (steps - 1)
    lo = base / 10
    if schedule == "linear":
        return base + (lo - base) * frac
    return lo + 0.5 * (base - lo) * (1 + math.cos(math.pi * frac))


def adapt_scale(scale: torch.Tensor, held: torch.Tensor, gamma: float) -> torch.Tensor:
    """One update of the per-example λ multipliers ``(N,)`` (``lam_adapt=gamma``): × ``gamma``
    where the iterate is classified as the target (``held``), ÷ ``gamma ** LAM_ADAPT_DOWN``
    where it is not, clamped to :data:`LAM_SCALE_RANGE`."""
    return torch.where(held, scale * gamma, scale / gamma**LAM_ADAPT_DOWN).clamp(*LAM_SCALE_RANGE)


def resize_map(m: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize maps ``(N, 1, h, w)`` to ``size`` (area averaging down, bilinear up), kept in [0, 1]."""
    if tuple(m.shape[-2:]) == tuple(size):
        return m
    if m.shape[-2] >= size[0] and m.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(m, size)
    return F.interpolate(m, size=size, mode="bilinear", align_corners=False).clamp(0, 1)


@dataclass
class AttackContext:
    """What the loop's strategies may read: the clean images ``x``, the target classes, the
    target maps ``m_t`` (resized to the interpreter's map size on first use) and ``eps``."""

    x: torch.Tensor
    target_class: torch.Tensor
    m_t: torch.Tensor
    eps: float | None
    objective: str = "adv2"
    measure: str = "topk"
    k: float = 0.1
    p_benign: torch.Tensor | None = None

    def distance(self, m: torch.Tensor) -> torch.Tensor:
        """The interpretation loss ``(N,)`` of maps ``m`` (lower is better): for ``adv2`` and
        ``manipulate`` the per-example mean squared error to the target maps; for ``fragility``
        (``m_t`` = the benign map) the mean of ``m`` over the benign map's top-``k`` pixels
        (``measure="topk"``), minus the centre-of-mass shift over the map's diagonal
        (``"center_of_mass"``), or minus the mean absolute difference to it (``"l1"``)."""
        if m.shape[-2:] != self.m_t.shape[-2:]:
            self.m_t = resize_map(self.m_t, m.shape[-2:])
        if self.objective != "fragility":
            return (m - self.m_t).pow(2).flatten(1).mean(1)
        if self.measure == "topk":
            top = topk_mask(self.m_t, self.k).flatten(1).to(m.dtype)
            return (m.flatten(1) * top).sum(1) / top.sum(1)
        if self.measure == "l1":
            return -(m - self.m_t).abs().flatten(1).mean(1)
        h, w = m.shape[-2:]
        return -(_center(m) - _center(self.m_t)).norm(dim=1) / math.hypot(h, w)

    def prediction_loss(self, logits: torch.Tensor) -> torch.Tensor:
        """``(N,)``: the cross-entropy towards the target class (``adv2``), or towards the benign
        output distribution (``manipulate``, ``fragility``: keep the prediction and its confidence)."""
        if self.p_benign is None:
            return F.cross_entropy(logits, self.target_class, reduction="none")
        return F.cross_entropy(logits, self.p_benign, reduction="none")

    def quantize(self, x_adv: torch.Tensor) -> torch.Tensor:
        """``x_adv`` on the 8-bit grid, inside the ε-ball (:func:`adv2.attacks.pgd.quantize`; for the
        flow perturbation, which has no ε-ball, rounded to the grid)."""
        if self.eps is None:
            return (torch.round(x_adv * 255) / 255).clamp(0, 1)
        return quantize(x_adv, self.x, self.eps)


def _center(m: torch.Tensor) -> torch.Tensor:
    """Differentiable centres of mass ``(N, 2)`` (row, column in pixels) of maps ``(N, 1, h, w)``."""
    h, w = m.shape[-2:]
    mass = m.flatten(1).sum(1).clamp_min(1e-12)
    rows = torch.arange(h, dtype=m.dtype, device=m.device)
    cols = torch.arange(w, dtype=m.dtype, device=m.device)
    return torch.stack([(m.sum(3)[:, 0] * rows).sum(1), (m.sum(2)[:, 0] * cols).sum(1)], 1) / mass[:, None]


class BoxPerturbation:
    """L∞ (the default): the variable is the image; PGD warm start; the step rule moves it."""

    def __init__(self, attack: ADV2, rule):
        self.a, self.rule = attack, rule

    def start(self, x):
        return x.clone()

    def warm(self, var, x, target_class):
        return pgd_step(self.a.model, var, x, target_class, self.a.eps, self.a.alpha)

    def image(self, var):
        return var

    def penalty(self, var):
        return None

    def step(self, ctx, var, grad, t, logits):
        return self.rule(ctx, var, grad, t, logits)


class FlowPerturbation:
    """StAdv's flow field (:mod:`adv2.attacks.flow`): the variable is a per-pixel flow ``(N, 2, H, W)``,
    the image ``warp(x, flow)``, the penalty ``tau · ℓ_flow``, the step Adam (per element, so per
    example); the warm start takes Adam steps on the cross-entropy and the penalty."""

    def __init__(self, attack: ADV2, x):
        self.a, self.x = attack, x

    def start(self, x):
        flow = torch.zeros(x.shape[0], 2, *x.shape[-2:], device=x.device, dtype=x.dtype, requires_grad=True)
        self.opt = torch.optim.Adam([flow], lr=self.a.flow_lr, betas=self.a.betas)
        return flow

    def image(self, var):
        return warp_unchecked(self.x, var)

    def penalty(self, var):
        return self.a.tau * flow_loss(var)

    def warm(self, var, x, target_class):
        loss = F.cross_entropy(self.a.model(self.image(var)), target_class, reduction="none") + self.penalty(var)
        (grad,) = torch.autograd.grad(loss.sum(), var)
        return self.step(None, var, grad, None, None)

    def step(self, ctx, var, grad, t, logits):
        if t is not None:  # a joint iteration: the learning rate follows flow_lr_schedule
            for group in self.opt.param_groups:
                group["lr"] = decayed(self.a.flow_lr, t, self.a.steps, self.a.flow_lr_schedule)
        var.grad = grad
        self.opt.step()
        var.grad = None
        return var


class ADV2:
    """The ADV² attack (Zhang et al., USENIX Security 2020) against classifier ``model`` and
    interpreter ``interpreter``.

    Minimises ``CE(f(x̂), c_t) + λ_t · mean_{pixels}(g(x̂; c_t) − m_t)²`` subject to
    ``‖x̂ − x‖∞ ≤ eps`` and ``x̂ ∈ [0, 1]`` by signed gradient steps of size ``alpha``:
    first ``warmup`` steps of plain targeted PGD on the cross-entropy, then ``steps`` steps on
    the joint loss. In the joint stage the step size decays from ``alpha`` to ``alpha/10``
    (``alpha_schedule="cosine"``, the default; the authors kept it constant, which
    ``"constant"`` reproduces): on the embedded ResNet this cut ADV²'s GRAD map distance by a
    fifth at the same budget (``benchmarks/quality.py``).

    λ multiplies the per-pixel *mean* squared error between min–max normalised maps, so it
    means the same at any map size; the paper's Table 10 weights a *sum* at its map sizes,
    so ``λ = λ_paper · h·w`` (CAM: 0.204 × 7·7 ≈ 10; GRAD: 0.007 × 56·56 ≈ 22). With
    ``lam_schedule="linear"`` λ_t ramps from ``lam`` to ``2·lam`` over the joint stage (as the
    authors did); ``"constant"`` keeps it fixed.

    Per example, the result is the best iterate of the joint stage: among iterates that ``f``
    classifies as ``c_t``, the one whose map is closest to ``m_t`` (for GRAD, the distance of
    the surrogate map the loss uses); if none is, the last iterate. Everything is per example,
    so results do not depend on batch composition.

    MASK (an optimisation, not a formula) joins the same loop through its tracker and the
    ``"search"`` step rule (its defaults): a running mask follows ``x̂`` by ``n_step``
    differentiated Adam steps per iteration and is re-solved from scratch on the 8-bit image
    every ``n_reset`` iterations, where the keep-best candidates are taken; the image moves
    along the L2-normalised gradient by the largest of ``alpha_max, alpha_max/2, …`` (``n_bs``
    halvings) that keeps it classified as ``c_t``, per example (:mod:`adv2.attacks.steps`).
    ``mask_loss="objective"`` replaces the unrolled steps by the authors' shortcut. ``n_seeds``
    (default 1, the paper's scheme) averages the loss and the keep-best distance over that many
    MASK jitter seeds, none of them the one the reported map uses (an expectation over MASK's
    randomness; the demo uses 8).

    ``lam_adapt=γ`` in ``[1, 2)`` adapts λ per example, as Carlini & Wagner search their constant
    but online: at each joint iteration, before its step, an example's λ multiplier (1 before the
    first) grows by ``γ`` if the current iterate is classified as ``c_t`` and shrinks by ``γ**20``
    if not (kept in [1e-3, 1e6]).
    The map term then dominates wherever the class holds, so the penalty weights stop binding:
    the attack minimises the map distance while it keeps the class. The default ``1`` keeps λ
    as scheduled. For the flow this is how GRAD's map reaches half of StAdv's distance, at the
    price of larger flows (``benchmarks/stadv.py``).

    RTS adds ``lam_enc`` (default 0.1, the paper's λ₂) × the cross-entropy of the RTS encoder's
    own head towards ``c_t`` to the loss (its tracker's auxiliary term).

    ``perturbation="flow"`` (StAdv-based ADV², paper Eqn 14) moves pixels instead: the variable
    is a per-pixel flow, ``x̂ = warp(x, flow)`` (:mod:`adv2.attacks.flow`), the loss gains
    ``tau · ℓ_flow`` and Adam (``flow_lr``, ``betas``) takes the steps; there is no ε-ball and,
    by default, no warm start (Table 11 iterations and λ). ``flow_lr_schedule`` (default
    ``"constant"``, the paper's) may decay Adam's rate like ``alpha_schedule`` does the L∞ step.
    The result's ``flow`` is the flow of ``x_adv``.

    Call: ``atk(x, target_class, target_map=None)`` with ``x`` ``(N, 3, H, W)`` in ``[0, 1]``,
    ``target_class`` ``(N,)``, ``target_map`` ``(N, 1, h, w)`` in ``[0, 1]`` (any size, resized
    to the interpreter's) or ``None`` for the benign map ``g(x; f(x).argmax(1))``.
    Returns an :class:`AttackResult` whose ``map`` is the (exact) ``g(x_adv; c_t)``.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        interpreter,
        perturbation: str = "linf",
        eps: float = 0.031,
        alpha: float = 1 / 255,
        steps: int | None = None,
        warmup: int | None = None,
        lam: float | None = None,
        lam_schedule: str = "linear",
        alpha_schedule: str = "cosine",
        step_rule: str | None = None,
        alpha_max: float = 0.08,
        n_bs: int = 12,
        n_step: int | None = None,
        n_reset: int | None = None,
        n_seeds: int = 1,
        mask_loss: str = "unroll",
        lam_enc: float | None = None,
        tau: float | None = None,
        flow_lr: float = 0.01,
        flow_lr_schedule: str = "constant",
        betas: tuple[float, float] = (0.9, 0.999),
        lam_adapt: float = 1.0,
        progress: bool = False,
        objective: str = "adv2",
        measure: str = "topk",
        k: float = 0.1,
    ):
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}; expected one of {OBJECTIVES}")
        if measure not in MEASURES:
            raise ValueError(f"unknown measure {measure!r}; expected one of {MEASURES}")
        if isinstance(k, bool) or not isinstance(k, (int, float)) or not 0 < k <= 1:
            raise ValueError(f"k must be a number in (0, 1], got {k!r}")
        self.objective, self.measure, self.k = objective, measure, float(k)
        if objective != "adv2":  # keep the prediction: no warm start towards another class
            if warmup not in (None, 0):
                raise ValueError(f"objective={objective!r} keeps the prediction; it takes no warmup (got {warmup!r})")
            warmup = 0
            if mask_loss == "objective":
                raise ValueError(f"mask_loss='objective' (the authors' shortcut) pulls MASK towards m_t; it cannot "
                                 f"serve objective={objective!r}")
        if perturbation not in PERTURBATIONS:
            raise ValueError(f"unknown perturbation {perturbation!r}; expected one of {PERTURBATIONS}")
        if lam_schedule not in SCHEDULES:
            raise ValueError(f"unknown lam_schedule {lam_schedule!r}; expected one of {SCHEDULES}")
        name = getattr(interpreter, "defaults_like", getattr(interpreter, "name", ""))  # wrapped: its family's
        defaults = PAPER_DEFAULTS.get(name, PAPER_DEFAULTS["cam"])
        if perturbation == "flow":
            if step_rule is not None:
                raise ValueError("step_rule applies to perturbation='linf'; the flow is moved by Adam")
            defaults = {**defaults, "warmup": 0, "tau": 5e-4, "step_rule": "flow", **FLOW_DEFAULTS.get(name, {})}
        self.model, self.interpreter, self.perturbation = model, interpreter, perturbation
        self.eps = check_eps(eps)
        self.alpha = check_positive(alpha, "alpha")
        self.steps = defaults["steps"] if steps is None else steps
        self.warmup = defaults["warmup"] if warmup is None else warmup
        for k in ("steps", "warmup"):
            _check_int(getattr(self, k), k, 0)
        self.lam = defaults["lam"] if lam is None else lam
        if not isinstance(self.lam, (int, float)) or self.lam < 0:
            raise ValueError(f"lam must be a non-negative number, got {self.lam!r}")
        self.lam_schedule = lam_schedule
        if alpha_schedule not in ALPHA_SCHEDULES:
            raise ValueError(f"unknown alpha_schedule {alpha_schedule!r}; expected one of {ALPHA_SCHEDULES}")
        self.alpha_schedule = alpha_schedule
        self.step_rule = defaults.get("step_rule", "sign") if step_rule is None else step_rule
        self.tau = defaults.get("tau", 5e-4) if tau is None else tau
        if not isinstance(self.tau, (int, float)) or isinstance(self.tau, bool) or not 0 <= self.tau < math.inf:
            raise ValueError(f"tau must be a non-negative number, got {self.tau!r}")
        self.flow_lr = check_positive(flow_lr, "flow_lr")
        if flow_lr_schedule not in ALPHA_SCHEDULES:
            raise ValueError(f"unknown flow_lr_schedule {flow_lr_schedule!r}; expected one of {ALPHA_SCHEDULES}")
        if flow_lr_schedule != "constant" and perturbation != "flow":
            raise ValueError("flow_lr_schedule applies to perturbation='flow'; the L∞ step follows alpha_schedule")
        self.flow_lr_schedule = flow_lr_schedule
        if isinstance(lam_adapt, bool) or not isinstance(lam_adapt, (int, float)) or not 1 <= lam_adapt < 2:
            raise ValueError(f"lam_adapt must be a number in [1, 2) (1 = off), got {lam_adapt!r}")
        self.lam_adapt = float(lam_adapt)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
        self.betas = (float(betas[0]), float(betas[1]))
        if self.step_rule not in STEP_RULES and perturbation == "linf":
            raise ValueError(f"unknown step_rule {self.step_rule!r}; expected one of {STEP_RULES}")
        self.alpha_max = check_positive(alpha_max, "alpha_max")
        self.n_bs = _check_int(n_bs, "n_bs", 0)
        self.n_step = _check_int(defaults.get("n_step", 4) if n_step is None else n_step, "n_step", 1)
        self.n_reset = _check_int(defaults.get("n_reset", 50) if n_reset is None else n_reset, "n_reset", 1)
        self.n_seeds = _check_int(n_seeds, "n_seeds", 1)
        if mask_loss not in MASK_LOSSES:
            raise ValueError(f"unknown mask_loss {mask_loss!r}; expected one of {MASK_LOSSES}")
        self.mask_loss = mask_loss
        self.lam_enc = defaults.get("lam_enc", 0.1) if lam_enc is None else lam_enc
        if not isinstance(self.lam_enc, (int, float)) or isinstance(self.lam_enc, bool) or not self.lam_enc >= 0:
            raise ValueError(f"lam_enc must be a non-negative number, got {self.lam_enc!r}")
        self.progress = progress

    def lam_at(self, t: int) -> float:
        """λ at joint iteration ``t`` (0-based)."""
        if self.lam_schedule == "constant" or self.steps <= 1:
            return self.lam
        return self.lam * (1 + t / (self.steps - 1))

    def alpha_at(self, t: int) -> float:
        """Step size at joint iteration ``t``: ``alpha`` throughout (``"constant"``), or decaying
        from ``alpha`` to ``alpha/10`` (``"cosine"``, ``"linear"``)."""
        return decayed(self.alpha, t, self.steps, self.alpha_schedule)

    def benign_map(self, x: torch.Tensor) -> torch.Tensor:
        """``g(x; f(x).argmax(1))``, detached."""
        with torch.no_grad():
            pred = self.model(x).argmax(1)
        return self.interpreter(x, pred).detach()

    @model_call
    def __call__(self, x: torch.Tensor, target_class: torch.Tensor, target_map=None) -> AttackResult:
        check_images(x)
        n = x.shape[0]
        target_class = check_targets(target_class, n, num_classes_of(self.model))
        self.interpreter.validate(x)
        x = x.detach()
        m_t = self.benign_map(x) if target_map is None else check_maps(target_map, n).detach().to(x)

        if self.objective == "manipulate" and target_map is None:
            raise ValueError("objective='manipulate' needs a target_map (the map to reach)")
        p_benign = None
        if self.objective != "adv2":
            with torch.no_grad():
                p_benign = F.softmax(self.model(x), 1)
            if not torch.equal(p_benign.argmax(1), target_class):
                raise ValueError(f"objective={self.objective!r} keeps the prediction: target_class must be the "
                                 "model's prediction f(x).argmax(1) (Manipulate and Fragility pass it)")
        flow = self.perturbation == "flow"
        ctx = AttackContext(x, target_class, m_t, None if flow else self.eps, self.objective, self.measure, self.k,
                            p_benign)
        tracker = self.interpreter.tracker(n_step=self.n_step, n_reset=self.n_reset, mask_loss=self.mask_loss,
                                           lam_enc=self.lam_enc, n_seeds=self.n_seeds)
        if flow:
            pert = FlowPerturbation(self, x)
        elif self.step_rule == "sign":
            pert = BoxPerturbation(self, SignStep(self.alpha_at))
        else:
            pert = BoxPerturbation(self, SearchStep(self.model, self.alpha_max, self.n_bs))

        var = pert.start(x)  # the image (L∞) or the flow
        bar = tqdm(total=self.warmup + self.steps, desc=f"adv2[{self.interpreter.name}]",
                   disable=not self.progress, leave=False)
        for _ in range(self.warmup):
            var = pert.warm(var, x, target_class)
            bar.update()

        best_x = pert.image(var).detach().clone()
        best_var = var.detach().clone() if flow else None
        best_d = torch.full((n,), float("inf"), device=x.device)
        scale = torch.ones(n, device=x.device, dtype=x.dtype)  # per-example λ multipliers (lam_adapt)
        for t in range(self.steps + 1):
            var.requires_grad_(True)
            x_adv = pert.image(var)
            last = t == self.steps
            logits, d, cand, aux = tracker(ctx, x_adv, t, last)
            if cand is not None:
                with torch.no_grad():
                    x_c, d_c, ok = cand
                    better = ok & (d_c < best_d)
                    best_d = torch.where(better, d_c, best_d)
                    best_x = torch.where(better[:, None, None, None], x_c, best_x)
                    if flow:
                        best_var = torch.where(better[:, None, None, None], var.detach(), best_var)
            if last:
                break
            if self.lam_adapt != 1:
                scale = adapt_scale(scale, logits.detach().argmax(1) == ctx.target_class, self.lam_adapt)
            loss = ctx.prediction_loss(logits) + self.lam_at(t) * scale * d
            if aux is not None:
                loss = loss + aux
            pen = pert.penalty(var)
            if pen is not None:
                loss = loss + pen
            loss = loss.sum()
            (grad,) = torch.autograd.grad(loss, var)
            var = pert.step(ctx, var, grad, t, logits.detach())
            bar.update()
        bar.close()
        found = torch.isfinite(best_d)
        x_out = torch.where(found[:, None, None, None], best_x, pert.image(var).detach())
        res = finish(self.model, x_out, target_class, self.interpreter)
        res.map_distance = ctx.distance(res.map)
        if flow:
            res.flow = torch.where(found[:, None, None, None], best_var, var.detach())
        return res

    def __repr__(self):
        return (f"ADV2({self.interpreter!r}, eps={self.eps:.4g}, alpha={self.alpha:.4g}, steps={self.steps}, "
                f"warmup={self.warmup}, lam={self.lam:.4g}, schedule={self.lam_schedule!r}, "
                f"step_rule={self.step_rule!r}{self._repr_extras()})")

    def _repr_extras(self) -> str:
        out = f", lam_adapt={self.lam_adapt:.4g}" if self.lam_adapt != 1 else ""
        return out + (f", flow_lr_schedule={self.flow_lr_schedule!r}" if self.flow_lr_schedule != "constant" else "")


def _check_int(v, name: str, lo: int) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        what = "a non-negative integer" if lo == 0 else f"an integer ≥ {lo}"
        raise ValueError(f"{name} must be {what}, got {v!r}")
    return v
