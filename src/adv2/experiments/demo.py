"""``adv2 demo``: PGD, ADV², StAdv and StAdv-based ADV² against every interpreter on an embedded model."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import torch
import yaml
from tqdm.auto import tqdm

from adv2 import interpreters, metrics, models
from adv2._validate import check_positive
from adv2.attacks import ADV2, PGD, StAdv
from adv2.attacks.flow import flow_loss
from adv2.data import CLASSES, NUM_CLASSES
from adv2.experiments.sampling import correctly_classified_shapes, target_classes
from adv2.experiments.store import (
    FLOW_KEYS,
    SUMMARY_KEYS,
    env_info,
    format_table,
    markdown_table,
    summarize,
    write_run,
)
from adv2.report import maps_figure

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
    return {"n": n, "pgd": {"steps": pgd_steps}, "stadv": {"steps": 300}, **plain, "mask": mask}


_MASK = {"warmup": 50, "steps": 100, "n_step": 4, "n_reset": 25, "alpha_max": 0.3, "interpreter": {"steps": 300},
         "flow": {"warmup": 50, "steps": 100, "n_reset": 25}}
#: Attack budgets for the embedded 64×64 models, found by measurement (benchmarks/quality.py,
#: benchmarks/stadv.py): ``pgd`` and ``stadv`` steps for the baselines; per interpreter, the
#: keyword arguments of ``ADV2`` (its PGD ``warmup``, joint ``steps``, MASK's ``n_step``,
#: ``n_reset``, ``alpha_max``), under ``flow`` those of the flow variant
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


def evaluate_attack(name, interp_name, res, benign, indices, seconds) -> list[dict]:
    """Per-example rows for one (attack, interpreter): success, confidence, map distances and,
    for the flow attacks, the flow's size (``flow_mean``: mean of ``|Δu|`` and ``|Δv|`` in pixels;
    ``flow_loss``: ℓ_flow, :func:`adv2.attacks.flow.flow_loss`)."""
    l1 = metrics.lp_distance(res.map, benign, p=1)
    l2 = metrics.lp_distance(res.map, benign, p=2)
    iou = metrics.iou_test(res.map, benign)
    flow = getattr(res, "flow", None)
    if flow is not None:
        f_mean, f_loss = flow.abs().flatten(1).mean(1), flow_loss(flow)
    rows = []
    for j, i in enumerate(indices):
        row = {
            "index": int(i), "attack": name, "interpreter": interp_name,
            "success": bool(res.success[j]), "success_quantized": bool(res.success_quantized[j]),
            "confidence": float(res.confidence[j]), "l1": float(l1[j]), "l2": float(l2[j]),
            "iou": float(iou[j]), "seconds": seconds / len(indices),
            "flow_mean": float(f_mean[j]) if flow is not None else None,
            "flow_loss": float(f_loss[j]) if flow is not None else None,
        }
        rows.append(row)
    return rows


def run_demo(model: str = "shapes-resnet", fast: bool = False, n: int | None = None, out: str | Path | None = None,
             seed: int = 0, batch_size: int = 32, interpreter_names=INTERPRETERS, eps: float = 0.031,
             alpha: float = 1 / 255, budgets: dict | None = None, overrides: list[str] | None = None,
             attacks=ATTACKS, progress: bool = True, verbose: bool = True) -> dict:
    """Run the ``attacks`` (default all of :data:`ATTACKS`: PGD, ADV², StAdv, StAdv-based ADV²)
    against each interpreter on ``n`` correctly classified test images of an embedded model;
    write the run directory ``out`` and return the summary dict.

    ``budgets`` replaces the attack budgets (:data:`BUDGETS`); ``overrides`` sets single
    entries of them (``["mask.n_step=2", "grad.flow.steps=100"]``, see :func:`apply_overrides`)."""
    budget = apply_overrides(copy.deepcopy(budgets or BUDGETS["fast" if fast else "default"]), overrides or [])
    n = n if n is not None else budget["n"]
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    eps, alpha = check_positive(eps, "eps"), check_positive(alpha, "alpha")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    attacks = tuple(attacks)
    for a in attacks:
        if a not in ATTACKS:
            raise ValueError(f"unknown attack {a!r}; expected some of {', '.join(ATTACKS)}")
    if not attacks or len(set(attacks)) != len(attacks):
        raise ValueError(f"attacks must name each of {', '.join(ATTACKS)} at most once, got {list(attacks)}")
    for name in interpreter_names:
        if name not in interpreters.REGISTRY:
            raise ValueError(f"unknown interpreter {name!r}; expected one of {sorted(interpreters.REGISTRY)}")
    net = models.load(model)
    # build every interpreter and attack before any work, so bad settings fail at once
    interps, per_interp = {}, {a: {} for a in ("adv2", "adv2-stadv") if a in attacks}
    for name in interpreter_names:
        kwargs = dict(budget.get(name, {}))
        flow_kwargs = kwargs.pop("flow", {})
        try:
            interps[name] = interpreters.get(name, net, **kwargs.pop("interpreter", {}))
            if "adv2" in attacks:
                per_interp["adv2"][name] = ADV2(net, interps[name], eps=eps, alpha=alpha, **kwargs)
            if "adv2-stadv" in attacks:
                per_interp["adv2-stadv"][name] = ADV2(net, interps[name], perturbation="flow", **flow_kwargs)
        except TypeError as e:  # an unknown keyword from --set
            raise ValueError(f"bad setting for {name}: {e}") from None
    baselines = {}
    for a, cls, extra in (("pgd", PGD, dict(eps=eps, alpha=alpha)), ("stadv", StAdv, {})):
        if a in attacks:
            try:
                baselines[a] = cls(net, **extra, **budget.get(a, {}))
            except TypeError as e:
                raise ValueError(f"bad setting for {a}: {e}") from None
    out = Path(out) if out is not None else Path("runs") / f"demo-{model}{'-fast' if fast else ''}"
    torch.manual_seed(seed)
    t_start = time.time()
    x_all, y_all, masks, idx = correctly_classified_shapes(net, n, seed=seed)
    for g in interps.values():
        g.validate(x_all)
    ct_all = target_classes(y_all, idx, seed, NUM_CLASSES)
    config = {
        "command": "demo", "model": model, "n": n, "seed": seed, "fast": fast, "batch_size": batch_size,
        "eps": eps, "alpha": alpha, "interpreters": list(interpreter_names), "attacks": list(attacks),
        "budgets": budget, "data": {"name": "shapes", "split": "test", "seed": seed, "indices": idx},
    }
    examples, benign_stats = [], {}
    maps = {k: {"benign": [], **{a: [] for a in attacks}} for k in interpreter_names}
    tensors = {"x": x_all, "labels": y_all, "target_class": ct_all}

    def keep(key, value):
        tensors.setdefault(key, []).append(value.detach())

    batches = [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    total = len(batches) * (len(baselines) + len(interpreter_names))
    bar = tqdm(total=total, desc=f"demo {model}", disable=not progress)
    for b in batches:
        x, ct, ids = x_all[b], ct_all[b], idx[b]
        base_res = {}
        for a, atk in baselines.items():
            t0 = time.time()
            base_res[a] = (atk(x, ct), time.time() - t0)
            keep(f"x_{a}", base_res[a][0].x_adv)
            if a == "stadv":
                keep("flow_stadv", base_res[a][0].flow)
            bar.update()
        for name in interpreter_names:
            g = interps[name]
            benign = g(x, y_all[b]).detach()
            maps[name]["benign"].append(benign)
            for a in attacks:
                if a in baselines:
                    res, sec = base_res[a]
                    res.map = g(res.x_adv, ct).detach()
                else:
                    t0 = time.time()
                    res = per_interp[a][name](x, ct, target_map=benign)
                    sec = time.time() - t0
                    keep(f"x_{a}_{name}", res.x_adv)
                    if res.flow is not None:
                        keep(f"flow_{a}_{name}", res.flow)
                examples += evaluate_attack(a, name, res, benign, ids, sec)
                maps[name][a].append(res.map.detach())
            bar.update()
    bar.close()
    for name in interpreter_names:
        for att in maps[name]:
            maps[name][att] = torch.cat(maps[name][att])
            tensors[f"map_{att}_{name}"] = maps[name][att]
        benign_stats[name] = {"pointing_game": float(metrics.pointing_game(maps[name]["benign"], masks).float().mean())}
    tensors = {k: torch.cat(v) if isinstance(v, list) else v for k, v in tensors.items()}
    rows = summarize(examples)
    order = {a: i for i, a in enumerate(ATTACKS)}
    rows.sort(key=lambda r: (list(interpreter_names).index(r["interpreter"]), order[r["attack"]]))
    summary = {"model": model, "n": n, "seed": seed, "rows": rows, "benign": benign_stats,
               "seconds": round(time.time() - t_start, 1)}
    write_run(out, config, env_info(seed, next(net.parameters()).device), examples, summary, tensors)
    labels = [f"{CLASSES[int(y)]}→{CLASSES[int(t)]}" for y, t in zip(y_all, ct_all, strict=True)]
    maps_figure(x_all, maps, out / "maps.png", labels=labels,
                title=f"{model}: benign map and the maps under each attack (rows: true → target class)")
    keys = SUMMARY_KEYS + (FLOW_KEYS if any(a in attacks for a in ("stadv", "adv2-stadv")) else ())
    (out / "summary.md").write_text(markdown_table(rows, keys) + "\n")
    if verbose:
        print(format_table(rows, keys))
        print("benign pointing game: " + ", ".join(f"{k} {v['pointing_game']:.3f}" for k, v in benign_stats.items()))
        print(f"run directory: {out}  ({summary['seconds']:.0f} s)")
    return summary
