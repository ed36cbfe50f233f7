"""``adv2 demo``: PGD and ADV² against every interpreter on an embedded model."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import torch
import yaml
from tqdm.auto import tqdm

from adv2 import interpreters, metrics, models
from adv2._validate import check_positive
from adv2.attacks import ADV2, PGD
from adv2.data import CLASSES, NUM_CLASSES
from adv2.experiments.sampling import correctly_classified_shapes, target_classes
from adv2.experiments.store import env_info, format_table, markdown_table, summarize, write_run
from adv2.report import maps_figure

INTERPRETERS = ("grad", "cam", "gradcam", "mask", "rts")
#: Interpreters the demo can run (``--interpreters``); ``rts-aid`` is the AID-defended RTS.
KNOWN = (*INTERPRETERS, "rts-aid")


def _budget(n: int, pgd_steps: int, warmup: int, steps: int, mask: dict) -> dict:
    plain = {k: {"warmup": warmup, "steps": steps} for k in ("grad", "cam", "gradcam", "rts", "rts-aid")}
    return {"n": n, "pgd": {"steps": pgd_steps}, **plain, "mask": mask}


#: Attack budgets for the embedded 64×64 models, found by measurement (benchmarks/quality.py):
#: ``pgd`` steps for the baseline; per interpreter, the keyword arguments of ``ADV2`` (its PGD
#: ``warmup``, joint ``steps``, MASK's ``n_step``, ``n_reset``, ``alpha_max``) and, under
#: ``interpreter``, those of the interpreter itself (MASK's Adam ``steps``).
BUDGETS = {
    "default": _budget(32, 100, 50, 300, {"warmup": 50, "steps": 100, "n_step": 4, "n_reset": 25, "alpha_max": 0.3,
                                          "interpreter": {"steps": 300}}),
    "fast": _budget(12, 50, 20, 100, {"warmup": 50, "steps": 100, "n_step": 4, "n_reset": 25, "alpha_max": 0.3,
                                      "interpreter": {"steps": 300}}),
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
                if part == "interpreter" and i == 1 and path[0] in KNOWN:
                    node[part] = {}
                else:
                    raise ValueError(f"unknown setting {key!r}; top-level keys: {sorted(budget)}")
            node = node[part]
        if not last:
            raise ValueError(f"unknown setting {key!r}")
        node[last] = yaml.safe_load(value)
    return budget


def evaluate_attack(name, interp_name, res, benign, indices, seconds) -> list[dict]:
    """Per-example rows for one (attack, interpreter): success, confidence, map distances."""
    l1 = metrics.lp_distance(res.map, benign, p=1)
    l2 = metrics.lp_distance(res.map, benign, p=2)
    iou = metrics.iou_test(res.map, benign)
    rows = []
    for j, i in enumerate(indices):
        rows.append({
            "index": int(i), "attack": name, "interpreter": interp_name,
            "success": bool(res.success[j]), "success_quantized": bool(res.success_quantized[j]),
            "confidence": float(res.confidence[j]), "l1": float(l1[j]), "l2": float(l2[j]),
            "iou": float(iou[j]), "seconds": seconds / len(indices),
        })
    return rows


def run_demo(model: str = "shapes-resnet", fast: bool = False, n: int | None = None, out: str | Path | None = None,
             seed: int = 0, batch_size: int = 32, interpreter_names=INTERPRETERS, eps: float = 0.031,
             alpha: float = 1 / 255, budgets: dict | None = None, overrides: list[str] | None = None,
             progress: bool = True, verbose: bool = True) -> dict:
    """Run PGD and ADV² against each interpreter on ``n`` correctly classified test images of
    an embedded model; write the run directory ``out`` and return the summary dict.

    ``budgets`` replaces the attack budgets (:data:`BUDGETS`); ``overrides`` sets single
    entries of them (``["mask.n_step=2"]``, see :func:`apply_overrides`)."""
    budget = apply_overrides(copy.deepcopy(budgets or BUDGETS["fast" if fast else "default"]), overrides or [])
    n = n if n is not None else budget["n"]
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    eps, alpha = check_positive(eps, "eps"), check_positive(alpha, "alpha")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    for name in interpreter_names:
        if name not in interpreters.REGISTRY:
            raise ValueError(f"unknown interpreter {name!r}; expected one of {sorted(interpreters.REGISTRY)}")
    net = models.load(model)
    # build every interpreter and attack before any work, so bad settings fail at once
    interps, attacks = {}, {}
    for name in interpreter_names:
        kwargs = dict(budget.get(name, {}))
        try:
            interps[name] = interpreters.get(name, net, **kwargs.pop("interpreter", {}))
            attacks[name] = ADV2(net, interps[name], eps=eps, alpha=alpha, **kwargs)
        except TypeError as e:  # an unknown keyword from --set
            raise ValueError(f"bad setting for {name}: {e}") from None
    try:
        pgd_attack = PGD(net, eps=eps, alpha=alpha, **budget["pgd"])
    except TypeError as e:
        raise ValueError(f"bad setting for pgd: {e}") from None
    out = Path(out) if out is not None else Path("runs") / f"demo-{model}{'-fast' if fast else ''}"
    torch.manual_seed(seed)
    t_start = time.time()
    x_all, y_all, masks, idx = correctly_classified_shapes(net, n, seed=seed)
    for g in interps.values():
        g.validate(x_all)
    ct_all = target_classes(y_all, idx, seed, NUM_CLASSES)
    config = {
        "command": "demo", "model": model, "n": n, "seed": seed, "fast": fast, "batch_size": batch_size,
        "eps": eps, "alpha": alpha, "interpreters": list(interpreter_names), "budgets": budget,
        "data": {"name": "shapes", "split": "test", "seed": seed, "indices": idx},
    }
    examples, benign_stats = [], {}
    maps = {k: {"benign": [], "pgd": [], "adv2": []} for k in interpreter_names}
    tensors = {"x": x_all, "labels": y_all, "target_class": ct_all}
    batches = [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    total = len(batches) * (1 + len(interpreter_names))
    bar = tqdm(total=total, desc=f"demo {model}", disable=not progress)
    x_pgd_all = []
    for b in batches:
        x, ct, ids = x_all[b], ct_all[b], idx[b]
        t0 = time.time()
        res = pgd_attack(x, ct)
        t_pgd = time.time() - t0
        x_pgd_all.append(res.x_adv)
        bar.update()
        for name in interpreter_names:
            g = interps[name]
            benign = g(x, y_all[b]).detach()
            pgd_map = g(res.x_adv, ct).detach()
            res.map = pgd_map
            examples += evaluate_attack("pgd", name, res, benign, ids, t_pgd)
            t0 = time.time()
            r2 = attacks[name](x, ct, target_map=benign)
            examples += evaluate_attack("adv2", name, r2, benign, ids, time.time() - t0)
            maps[name]["benign"].append(benign)
            maps[name]["pgd"].append(pgd_map)
            maps[name]["adv2"].append(r2.map)
            tensors.setdefault(f"x_adv2_{name}", []).append(r2.x_adv)
            bar.update()
    bar.close()
    for name in interpreter_names:
        for att in maps[name]:
            maps[name][att] = torch.cat(maps[name][att])
            tensors[f"map_{att}_{name}"] = maps[name][att]
        tensors[f"x_adv2_{name}"] = torch.cat(tensors[f"x_adv2_{name}"])
        benign_stats[name] = {"pointing_game": float(metrics.pointing_game(maps[name]["benign"], masks).float().mean())}
    tensors["x_pgd"] = torch.cat(x_pgd_all)
    rows = summarize(examples)
    order = {a: i for i, a in enumerate(("pgd", "adv2"))}
    rows.sort(key=lambda r: (list(interpreter_names).index(r["interpreter"]), order[r["attack"]]))
    summary = {"model": model, "n": n, "seed": seed, "rows": rows, "benign": benign_stats,
               "seconds": round(time.time() - t_start, 1)}
    write_run(out, config, env_info(seed, next(net.parameters()).device), examples, summary, tensors)
    labels = [f"{CLASSES[int(y)]}→{CLASSES[int(t)]}" for y, t in zip(y_all, ct_all, strict=True)]
    maps_figure(x_all, maps, out / "maps.png", labels=labels,
                title=f"{model}: benign / PGD / ADV² maps (rows: true → target class)")
    (out / "summary.md").write_text(markdown_table(rows) + "\n")
    if verbose:
        print(format_table(rows))
        print("benign pointing game: " + ", ".join(f"{k} {v['pointing_game']:.3f}" for k, v in benign_stats.items()))
        print(f"run directory: {out}  ({summary['seconds']:.0f} s)")
    return summary
