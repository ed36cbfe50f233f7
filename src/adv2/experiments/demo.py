"""``adv2 demo``: PGD, ADV², StAdv and StAdv-based ADV² against every interpreter on an embedded model."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from adv2 import interpreters, metrics, models
from adv2._validate import check_eps, check_positive
from adv2.attacks.flow import flow_loss
from adv2.experiments.store import parse_shard

INTERPRETERS = ("grad", "cam", "gradcam", "mask", "rts")
#: Interpreters the demo can run (``--interpreters``); ``rts-aid`` is the AID-defended RTS.
KNOWN = (*INTERPRETERS, "rts-aid")
#: The demo's attacks: the two baselines (which ignore the interpreter) and ADV² on each
#: perturbation model (``adv2``: L∞; ``adv2-stadv``: the flow field, ``ADV2(perturbation="flow")``).
ATTACKS = ("pgd", "adv2", "stadv", "adv2-stadv")
BASELINES = {"adv2": "pgd", "adv2-stadv": "stadv"}
#: Budget sections (besides the interpreters') that ``--set`` may create.
_SECTIONS = ("interpreter", "flow")


def _budget(n: int, pgd_steps: int, warmup: int, steps: int, flow_steps: int, mask: dict) -> dict:
    plain = {k: {"warmup": warmup, "steps": steps, "flow": {"warmup": warmup, "steps": flow_steps}}
             for k in ("grad", "cam", "gradcam", "rts", "rts-aid")}
    plain["grad"]["flow"].update(_GRAD_FLOW)
    return {"n": n, "pgd": {"steps": pgd_steps}, "stadv": {"steps": 300}, **plain, "mask": mask}


#: GRAD's flow variant, in both budgets (benchmarks/stadv.py): 600 joint steps, per-example λ
#: adaptation and Adam's rate 0.03 decayed to 0.003. Its map reaches half of StAdv's distance only
#: by flows several times StAdv's (0.35–0.5 px against 0.05–0.07 on average).
_GRAD_FLOW = {"steps": 600, "lam_adapt": 1.02, "flow_lr": 0.03, "flow_lr_schedule": "cosine"}
_MASK = {"warmup": 50, "steps": 100, "n_step": 4, "n_reset": 25, "alpha_max": 0.3, "n_seeds": 8,
         "interpreter": {"steps": 300},
         "flow": {"warmup": 50, "steps": 100, "n_reset": 25}}
#: Attack budgets for the embedded 64×64 models, found by measurement (benchmarks/quality.py,
#: benchmarks/stadv.py): ``pgd`` and ``stadv`` steps for the baselines; per interpreter, the
#: keyword arguments of ``ADV2`` (its PGD ``warmup``, joint ``steps``, MASK's ``n_step``,
#: ``n_reset``, ``alpha_max``, ``n_seeds``), under ``flow`` those of the flow variant
#: (``ADV2(perturbation="flow")``, on top of its Table 11 defaults), and under ``interpreter``
#: those of the interpreter itself (MASK's Adam ``steps``).
BUDGETS = {
    "default": _budget(32, 100, 50, 300, 300, _MASK),
    "fast": _budget(12, 50, 20, 100, 100, _MASK),
}


def apply_overrides(budget: dict, overrides: list[str]) -> dict:
    """Set ``KEY=VALUE`` entries (dotted keys into the budget, e.g. ``mask.n_step=2``,
    ``mask.interpreter.lr=0.05``, ``pgd.steps=10``, ``n=4``; values parsed as YAML)."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        *path, last = key.strip().split(".")
        node = budget
        for i, part in enumerate(path):
            if not isinstance(node.get(part), dict):
                if part in _SECTIONS and i == 1 and path[0] in KNOWN:
                    node[part] = {}
                else:
                    raise ValueError(f"unknown setting {key!r}; top-level keys: {sorted(budget)}")
            node = node[part]
        if not last:
            raise ValueError(f"unknown setting {key!r}")
        node[last] = yaml.safe_load(value)
    return budget


def evaluate_attack(name, interp_name, res, benign, indices, seconds, x=None, labels=None, targets=None,
                    iterations=None) -> list[dict]:
    """Per-example rows for one (attack, interpreter): label, target, prediction, success (also
    after 8-bit rounding), confidence, map distances to ``benign``, ``linf`` = ‖x_adv − x‖∞ (given
    ``x``), the attack's ``iterations``, seconds and, for the flow attacks, the flow's size
    (``flow_mean``: mean of ``|Δu|`` and ``|Δv|`` in pixels; ``flow_loss``: ℓ_flow,
    :func:`adv2.attacks.flow.flow_loss`)."""
    l1 = metrics.lp_distance(res.map, benign, p=1)
    l2 = metrics.lp_distance(res.map, benign, p=2)
    iou = metrics.iou_test(res.map, benign)
    linf = (res.x_adv - x).abs().flatten(1).amax(1) if x is not None else None
    flow = getattr(res, "flow", None)
    if flow is not None:
        f_mean, f_loss = flow.abs().flatten(1).mean(1), flow_loss(flow)
    pred = getattr(res, "prediction", None)
    rows = []
    for j, i in enumerate(indices):
        row = {
            "index": int(i), "attack": name, "interpreter": interp_name,
            "label": int(labels[j]) if labels is not None else None,
            "target": int(targets[j]) if targets is not None else None,
            "prediction": int(pred[j]) if pred is not None else None,
            "success": bool(res.success[j]), "success_quantized": bool(res.success_quantized[j]),
            "confidence": float(res.confidence[j]), "l1": float(l1[j]), "l2": float(l2[j]),
            "iou": float(iou[j]), "linf": float(linf[j]) if linf is not None else None,
            "iterations": iterations, "seconds": seconds / len(indices),
            "flow_mean": float(f_mean[j]) if flow is not None else None,
            "flow_loss": float(f_loss[j]) if flow is not None else None,
        }
        rows.append(row)
    return rows


def iterations_of(attack) -> int:
    """Iterations an attack runs: PGD/StAdv ``steps``; ADV² ``warmup + steps``."""
    return int(getattr(attack, "warmup", 0) + attack.steps)


def run_demo(model: str = "shapes-resnet", fast: bool = False, n: int | None = None, out: str | Path | None = None,
             seed: int = 0, batch_size: int = 32, interpreter_names=INTERPRETERS, eps: float = 0.031,
             alpha: float = 1 / 255, budgets: dict | None = None, overrides: list[str] | None = None,
             attacks=ATTACKS, shard: str | None = None, restart: bool = False, progress: bool = True,
             verbose: bool = True) -> dict | None:
    """Run the ``attacks`` (default all of :data:`ATTACKS`: PGD, ADV², StAdv, StAdv-based ADV²)
    against each interpreter on ``n`` correctly classified test images of an embedded model;
    write the run directory ``out`` and return the summary dict.

    The run is stored batch by batch (:class:`~adv2.experiments.store.RunStore`): rerunning the
    same call resumes it, skipping finished batches, with per-example results identical to an
    uninterrupted run. ``shard="i/N"`` runs only batches ``k ≡ i (mod N)`` (independent jobs into
    one directory); the last shard to finish, or :func:`finish_run` (``adv2 merge``), builds the
    results; an unfinished shard returns ``None``. Started by ``torchrun --nproc_per_node K``
    (``RANK`` / ``WORLD_SIZE`` set, no ``shard``), rank r runs shard r/K over the gloo backend and
    rank 0 builds the results once all ranks are done (the others return ``None``).
    ``restart=True`` discards what ``out`` holds of an earlier run first.

    ``budgets`` replaces the attack budgets (:data:`BUDGETS`); ``overrides`` sets single
    entries of them (``["mask.n_step=2", "grad.flow.steps=100"]``, see :func:`apply_overrides`)."""
    budget = apply_overrides(copy.deepcopy(budgets or BUDGETS["fast" if fast else "default"]), overrides or [])
    n = n if n is not None else budget["n"]
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    eps, alpha = check_eps(eps), check_positive(alpha, "alpha")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    parse_shard(shard)  # a bad spec fails before any work
    attacks = tuple(attacks)
    for a in attacks:
        if a not in ATTACKS:
            raise ValueError(f"unknown attack {a!r}; expected some of {', '.join(ATTACKS)}")
    if not attacks or len(set(attacks)) != len(attacks):
        raise ValueError(f"attacks must name each of {', '.join(ATTACKS)} at most once, got {list(attacks)}")
    for name in interpreter_names:
        if name not in interpreters.REGISTRY:
            raise ValueError(f"unknown interpreter {name!r}; expected one of {sorted(interpreters.REGISTRY)}")
    if model not in models.EMBEDDED:  # the demo's data is the embedded shapes benchmark
        hint = "" if not isinstance(model, str) or "shapes" in model else (
            "; for your own classifier and images write a config for `adv2 run` (model: {name, weights}, "
            "data: {name: folder, root}) or use the Python API (adv2.attacks.ADV2)")
        raise ValueError(f"adv2 demo runs on the embedded models ({', '.join(models.EMBEDDED)}), got {model!r}{hint}")
    from adv2.experiments.config import packaged_config, resolve
    from adv2.experiments.runner import run_experiment

    raw = yaml.safe_load(packaged_config("demo").read_text())
    raw.update(model=model, data={"name": "shapes", "n": n, "seed": seed}, batch_size=batch_size, eps=eps,
               alpha=alpha, interpreters=list(interpreter_names), attacks=list(attacks), budgets=budget)
    cfg = resolve(raw, source="adv2 demo")
    out = Path(out) if out is not None else Path("runs") / f"demo-{model}{'-fast' if fast else ''}"
    return run_experiment(cfg, out, shard=shard, restart=restart, progress=progress, verbose=verbose)


def finish_run(out, verbose: bool = True):
    """See :func:`adv2.experiments.runner.finish_run` (kept here for older scripts)."""
    from adv2.experiments.runner import finish_run as _finish

    return _finish(out, verbose=verbose)
