"""ADV²: adversarial inputs that fool the classifier *and* keep the interpreter's map.

One loop for every interpreter: a perturbation (:mod:`adv2.attacks.perturbations`: the L∞ box
with signed steps or MASK's line search, StAdv's flow field with Adam) × an objective
(:mod:`adv2.attacks.objectives`: the prediction loss, the interpretation loss and λ's schedule)
× the interpreter's tracker (:meth:`~adv2.interpreters.Interpreter.tracker`, a small strategy
object: the GRAD surrogate lives in ``logits_and_map(smooth=True)``, MASK's running mask and
resets in its tracker, RTS's encoder term in its). The paper's budgets per interpreter live
with the interpreters (:mod:`adv2.interpreters.paper`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from adv2._validate import check_images, check_maps, check_targets, model_call, num_classes_of
from adv2.attacks.objectives import OBJECTIVES as _OBJECTIVES
from adv2.attacks.objectives import Fragility, Hide, Manipulate, Objective, adapt_scale
from adv2.attacks.perturbations import SCHEDULES as ALPHA_SCHEDULES
from adv2.attacks.perturbations import Flow, Linf, LinfSearch, Perturbation, decayed
from adv2.attacks.pgd import quantize
from adv2.attacks.result import AttackResult, finish
from adv2.interpreters.base import MapTracker
from adv2.interpreters.paper import FLOW_DEFAULTS, PAPER_DEFAULTS

__all__ = ["ADV2", "ALPHA_SCHEDULES", "FLAT_KEYS", "FLOW_DEFAULTS", "OBJECTIVES", "PAPER_DEFAULTS", "PERTURBATIONS",
           "STEP_RULES", "AttackContext", "decayed", "resize_map"]

PERTURBATIONS = ("linf", "flow")
#: What the loop optimises (the audit's names, :data:`adv2.attacks.objectives.OBJECTIVES`).
OBJECTIVES = tuple(_OBJECTIVES)
STEP_RULES = ("sign", "search")

#: The flat keywords of earlier versions (and the configs' budget keys) → where each setting
#: lives now: ``(owner, name there)``. ``linf``/``search``/``flow``: the perturbation
#: (:class:`Linf`, :class:`LinfSearch`, :class:`Flow`); ``objective``: the objective
#: (:class:`Hide`, :class:`Fragility`, ...); ``tracker``: the interpreter's tracker
#: (``g.tracker(...)``). ``ADV2(..., **flat)`` builds the objects through this table, and the
#: attack's attributes of these names read through it.
FLAT_KEYS = {
    "eps": ("linf", "eps"),
    "alpha": ("linf", "alpha"),
    "alpha_schedule": ("linf", "schedule"),
    "step_rule": ("linf", "step_rule"),
    "alpha_max": ("search", "max_length"),
    "n_bs": ("search", "halvings"),
    "tau": ("flow", "tau"),
    "flow_lr": ("flow", "lr"),
    "flow_lr_schedule": ("flow", "lr_schedule"),
    "betas": ("flow", "betas"),
    "lam": ("objective", "lam"),
    "lam_schedule": ("objective", "lam_schedule"),
    "lam_adapt": ("objective", "lam_adapt"),
    "measure": ("objective", "measure"),
    "k": ("objective", "k"),
    "n_step": ("tracker", "n_step"),
    "n_reset": ("tracker", "n_reset"),
    "n_seeds": ("tracker", "n_seeds"),
    "mask_loss": ("tracker", "mask_loss"),
    "unroll_draws": ("tracker", "unroll_draws"),
    "unroll_seeds": ("tracker", "unroll_seeds"),
    "rotate_seeds": ("tracker", "rotate_seeds"),
    "game_term": ("tracker", "game_term"),
    "lam_enc": ("tracker", "lam_enc"),
}


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
    target maps ``m_t`` (resized to the interpreter's map size on first use), ``eps`` (``None``
    without an ε-ball), the objective and, for objectives that keep the prediction, the benign
    output distribution ``p_benign``."""

    x: torch.Tensor
    target_class: torch.Tensor
    m_t: torch.Tensor
    eps: float | None
    objective: Objective = field(default_factory=Hide)
    p_benign: torch.Tensor | None = None

    def distance(self, m: torch.Tensor) -> torch.Tensor:
        """The objective's interpretation loss ``(N,)`` of maps ``m`` (lower is better): for ADV²
        and Manipulate the per-example mean squared error to the target maps; for Fragility
        (``m_t`` = the benign map) its measure of closeness to the benign map."""
        if m.shape[-2:] != self.m_t.shape[-2:]:
            self.m_t = resize_map(self.m_t, m.shape[-2:])
        return self.objective.distance(m, self.m_t)

    def prediction_loss(self, logits: torch.Tensor) -> torch.Tensor:
        """``(N,)``: the cross-entropy towards the target class (ADV²), or towards the benign
        output distribution (Manipulate, Fragility: keep the prediction and its confidence)."""
        return self.objective.prediction_loss(logits, self.target_class, self.p_benign)

    def quantize(self, x_adv: torch.Tensor) -> torch.Tensor:
        """``x_adv`` on the 8-bit grid, inside the ε-ball (:func:`adv2.attacks.pgd.quantize`; for the
        flow perturbation, which has no ε-ball, rounded to the grid)."""
        if self.eps is None:
            return (torch.round(x_adv * 255) / 255).clamp(0, 1)
        return quantize(x_adv, self.x, self.eps)


class ADV2:
    """The ADV² attack (Zhang et al., USENIX Security 2020) against classifier ``model`` and
    interpreter ``interpreter``: one loop, whatever the perturbation, objective or interpreter.

    Minimises ``CE(f(x̂), c_t) + λ_t · mean_{pixels}(g(x̂; c_t) − m_t)²`` over the perturbation:
    first ``warmup`` iterations on the cross-entropy alone (PGD for the L∞ box), then ``steps``
    joint iterations. Among the joint iterates classified as ``c_t``, each example keeps the one
    whose map is closest to ``m_t``.

    - ``interpreter``: an interpreter (``adv2.interpreters.get(...)``) or its tracker with attack
      options (``Mask(model).tracker(n_seeds=8)``, ``rts.tracker(lam_enc=0.1)``).
    - ``perturbation``: ``"linf"`` (the default: :class:`~adv2.attacks.perturbations.Linf`, or
      :class:`~adv2.attacks.perturbations.LinfSearch` for MASK), ``"flow"``
      (:class:`~adv2.attacks.perturbations.Flow`), or such an object with its settings.
    - ``objective``: ``"adv2"`` (:class:`~adv2.attacks.objectives.Hide`), ``"manipulate"``,
      ``"fragility"``, or such an object (λ, its schedule and adaptation, Fragility's measure).
    - ``steps`` / ``warmup``: ``None`` takes the interpreter's paper budget (Table 10 for the
      box, 11 for the flow; ``g.paper_budget(...)``), as does an objective's ``lam=None``.
    - ``**flat``: the flat keywords of earlier versions and of the configs' budgets (``eps``,
      ``alpha``, ``lam``, ``tau``, ``flow_lr``, ``n_step``, ``n_seeds``, ...), mapped to their
      owners by :data:`FLAT_KEYS`; a setting given both ways is an error naming the new spelling.

    λ multiplies the per-pixel *mean* squared error between min–max normalised maps, so it means
    the same at any map size (:mod:`adv2.interpreters.paper`). In the L∞ joint stage the step
    size decays from ``alpha`` to ``alpha/10`` (``schedule="cosine"``, the default; the authors
    kept it constant, which ``"constant"`` reproduces): on the embedded ResNet this cut ADV²'s
    GRAD map distance by a fifth at the same budget (docs/results.md).

    Call: ``atk(x, target_class, target_map=None)`` with ``x`` ``(N, 3, H, W)`` in ``[0, 1]``,
    ``target_class`` ``(N,)`` and ``target_map`` ``(N, 1, h, w)`` in ``[0, 1]`` (``None``: the
    benign map ``g(x; f(x).argmax(1))``) → :class:`~adv2.attacks.AttackResult` (``x_adv`` within
    the ε-ball and in ``[0, 1]``; ``flow`` for the flow perturbation). Per-example results do not
    depend on the batch.
    """

    def __init__(self, model: torch.nn.Module, interpreter, perturbation: str | Perturbation = "linf",
                 objective: str | Objective = "adv2", steps: int | None = None, warmup: int | None = None,
                 progress: bool = False, **flat):
        unknown = sorted(set(flat) - set(FLAT_KEYS))
        if unknown:
            raise TypeError(f"ADV2() got unexpected keyword argument(s) {', '.join(unknown)}; settings live in the "
                            "perturbation (Linf, LinfSearch, Flow), the objective (Hide, Manipulate, Fragility) "
                            "or the interpreter's tracker (g.tracker(...))")
        given = {owner: {} for owner in ("linf", "search", "flow", "objective", "tracker")}
        for key, value in flat.items():
            owner, name = FLAT_KEYS[key]
            given[owner][name] = value
        tracker = self._tracker(interpreter, given["tracker"])
        g = tracker.g
        self.model, self.interpreter, self.tracker, self.progress = model, g, tracker, progress
        self.perturbation = self._perturbation(g, perturbation, given)
        row = g.attack_budget(self.perturbation.name)
        if isinstance(self.perturbation, Flow) and self.perturbation.tau is None:
            self.perturbation = self.perturbation.replace(tau=row.get("tau", 5e-4))
        self.objective = self._objective(objective, given["objective"], row)
        self.steps = _check_int(row["steps"] if steps is None else steps, "steps", 0)
        if not self.objective.moves_class:  # keep the prediction: no warm start towards another class
            if warmup not in (None, 0):
                raise ValueError(f"objective={self.objective.name!r} keeps the prediction; it takes no warmup "
                                 f"(got {warmup!r})")
            warmup = 0
            if getattr(tracker, "mode", None) == "objective":
                raise ValueError(f"mask_loss='objective' (the authors' shortcut) pulls MASK towards m_t; it cannot "
                                 f"serve objective={self.objective.name!r}")
        self.warmup = _check_int(row["warmup"] if warmup is None else warmup, "warmup", 0)

    @classmethod
    def paper(cls, model: torch.nn.Module, interpreter, perturbation: str = "linf", **kwargs) -> ADV2:
        """The paper's attack: the interpreter's Table 10 (``"linf"``) or Table 11 (``"flow"``) budget
        (``g.paper_budget(...)``: its iterations and, for MASK, one fixed attack seed, no game term, ``n_step=4``,
        ``n_reset=50`` and the line search's ``alpha_max=0.08``), the paper's perturbation settings
        (ε = 0.031, α = 1/255; τ) and λ schedule. Keywords override any of them. ``ADV2(model, g)``
        differs only where the interpreter's :meth:`~adv2.interpreters.Interpreter.attack_budget`
        does (MASK)."""
        g = interpreter.g if isinstance(interpreter, MapTracker) else interpreter
        name = perturbation if isinstance(perturbation, str) else getattr(perturbation, "name", "linf")
        row = g.paper_budget(name) if name in PERTURBATIONS else {}
        for key in ("steps", "warmup"):
            if key in row:
                kwargs.setdefault(key, row[key])
        if not isinstance(interpreter, MapTracker):
            for key in ("n_step", "n_reset", "n_seeds", "rotate_seeds", "game_term"):
                if key in row:
                    kwargs.setdefault(key, row[key])
        if (perturbation == "linf" and kwargs.get("step_rule", row.get("step_rule")) == "search"
                and "alpha_max" in row):
            kwargs.setdefault("alpha_max", row["alpha_max"])
        return cls(model, interpreter, perturbation=perturbation, **kwargs)

    @staticmethod
    def _tracker(interpreter, options: dict) -> MapTracker:
        if isinstance(interpreter, MapTracker):
            if options:
                key = sorted(options)[0]
                raise ValueError(f"{key} given to ADV2 with a tracker: set it on the tracker only "
                                 f"(interpreter.tracker({key}=...))")
            return interpreter
        if not callable(getattr(interpreter, "tracker", None)):
            raise TypeError(f"ADV2 needs an adv2 interpreter or its tracker, got {type(interpreter).__name__} "
                            "(wrap a captum method with adv2.interpreters.from_captum)")
        return interpreter.tracker(**options)

    @staticmethod
    def _perturbation(g, perturbation, given: dict) -> Perturbation:
        linf, search, flow = given["linf"], given["search"], given["flow"]
        if isinstance(perturbation, Perturbation):
            extra = {**linf, **search, **flow}
            if extra:
                key = sorted(extra)[0]
                raise ValueError(f"{key} is a setting of the perturbation: pass {type(perturbation).__name__}("
                                 f"{key}=...) instead of ADV2(..., {key}=...)")
            return perturbation
        if perturbation not in PERTURBATIONS:
            raise ValueError(f"unknown perturbation {perturbation!r}; expected one of {PERTURBATIONS} or an object "
                             "(Linf, LinfSearch, Flow)")
        if perturbation == "flow":
            wrong = sorted(_flat("linf", k) for k in linf) + sorted(_flat("search", k) for k in search)
            if wrong:
                raise ValueError(f"{wrong[0]} applies to perturbation='linf'; the flow perturbation's settings are "
                                 "tau, flow_lr, flow_lr_schedule, betas (Flow(tau, lr, lr_schedule, betas))")
            return _build(Flow, flow, "flow")
        if flow:
            key = sorted(_flat("flow", k) for k in flow)[0]
            raise ValueError(f"{key} applies to perturbation='flow' (Flow(tau, lr, lr_schedule, betas)); "
                             "the L∞ box has eps, alpha, alpha_schedule and the line search's alpha_max, n_bs")
        rule = linf.pop("step_rule", None)
        row = g.attack_budget("linf")
        if rule is None:
            rule = row.get("step_rule", "sign")
        if rule not in STEP_RULES:
            raise ValueError(f"unknown step_rule {rule!r}; expected one of {STEP_RULES}")
        if rule == "search":
            if "schedule" in linf:
                raise ValueError("alpha_schedule applies to step_rule='sign'; the line search has alpha_max and n_bs")
            if "alpha_max" in row:
                search.setdefault("max_length", row["alpha_max"])
            return _build(LinfSearch, {**linf, **search}, "linf", "search")
        if search:
            raise ValueError(f"{ {'max_length': 'alpha_max', 'halvings': 'n_bs'}[sorted(search)[0]]} applies to "
                             "step_rule='search' (MASK's line search, LinfSearch(max_length, halvings))")
        return _build(Linf, linf, "linf")

    @staticmethod
    def _objective(objective, settings: dict, row: dict) -> Objective:
        if isinstance(objective, Objective):
            if settings:
                key = sorted(settings)[0]
                raise ValueError(f"{key} is a setting of the objective: pass {type(objective).__name__}({key}=...) "
                                 f"instead of ADV2(..., {key}=...)")
        elif objective in _OBJECTIVES:
            cls = _OBJECTIVES[objective]
            wrong = sorted(set(settings) - {"lam", "lam_schedule", "lam_adapt"}) if cls is not Fragility else []
            if wrong:
                raise ValueError(f"{wrong[0]} applies to objective='fragility' (Fragility(measure, k))")
            objective = _build(cls, settings, "objective")
        else:
            raise ValueError(f"unknown objective {objective!r}; expected one of {OBJECTIVES} or an object "
                             "(Hide, Manipulate, Fragility)")
        return objective.replace(lam=row["lam"]) if objective.lam is None else objective

    def __getattr__(self, name: str):
        """Read settings by their flat names (``atk.eps``, ``atk.lam``, ``atk.n_seeds``...) through
        :data:`FLAT_KEYS`."""
        if name.startswith("_") or name not in FLAT_KEYS:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        owner, attr = FLAT_KEYS[name]
        obj = {"objective": self.__dict__.get("objective"), "tracker": self.__dict__.get("tracker")}.get(
            owner, self.__dict__.get("perturbation"))
        if owner == "tracker":
            opts = obj.options() if obj is not None else {}
            if attr in opts:
                return opts[attr]
            if obj is not None and hasattr(obj, attr):
                return getattr(obj, attr)
        elif obj is not None and hasattr(obj, attr):
            return getattr(obj, attr)
        raise AttributeError(f"{name!r}: this attack's {owner if owner in ('objective', 'tracker') else 'perturbation'}"
                             f" has no {attr!r}")

    def lam_at(self, t: int) -> float:
        """λ at joint iteration ``t`` (0-based)."""
        return self.objective.lam_at(t, self.steps)

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

        if isinstance(self.objective, Manipulate) and target_map is None:
            raise ValueError("objective='manipulate' needs a target_map (the map to reach)")
        p_benign = None
        if not self.objective.moves_class:
            with torch.no_grad():
                p_benign = F.softmax(self.model(x), 1)
            if not torch.equal(p_benign.argmax(1), target_class):
                raise ValueError(f"objective={self.objective.name!r} keeps the prediction: target_class must be the "
                                 "model's prediction f(x).argmax(1) (Manipulate and Fragility pass it)")
        flow = isinstance(self.perturbation, Flow)
        ctx = AttackContext(x, target_class, m_t, self.perturbation.eps, self.objective, p_benign)
        tracker = self.tracker
        tracker.reset()
        pert = self.perturbation.begin(self.model, x, self.steps)

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
        lam_adapt = self.objective.lam_adapt
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
            if lam_adapt != 1:
                scale = adapt_scale(scale, logits.detach().argmax(1) == ctx.target_class, lam_adapt)
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

    def settings(self) -> dict:
        """Every setting that changes results: the perturbation's, the objective's, the tracker's
        options and the iteration counts (flat, for run records)."""
        return {"perturbation": repr(self.perturbation), "objective": repr(self.objective),
                "tracker": self.tracker.options(), "steps": self.steps, "warmup": self.warmup}

    def __repr__(self):
        opts = self.tracker.options()
        g = repr(self.tracker) if opts else repr(self.interpreter)
        return f"ADV2({g}, {self.perturbation!r}, {self.objective!r}, steps={self.steps}, warmup={self.warmup})"


def _flat(owner: str, name: str) -> str:
    """The flat keyword of setting ``name`` of ``owner`` (:data:`FLAT_KEYS`)."""
    return next((k for k, v in FLAT_KEYS.items() if v == (owner, name)), name)


def _build(cls, kwargs: dict, *owners: str):
    """``cls(**kwargs)`` from flat keywords; a ``ValueError`` names the flat keyword as well."""
    try:
        return cls(**kwargs)
    except ValueError as e:
        msg = str(e)
        for name in kwargs:
            flat = next((_flat(o, name) for o in owners if _flat(o, name) != name), name)
            if flat != name and re.search(rf"\b{name}\b", msg):
                msg = re.sub(rf"\b{name}\b", flat, msg, count=1) + f" (now {cls.__name__}({name}=...))"
                break
        raise ValueError(msg) from None


def _check_int(v, name: str, lo: int) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        what = "a non-negative integer" if lo == 0 else f"an integer ≥ {lo}"
        raise ValueError(f"{name} must be {what}, got {v!r}")
    return v
