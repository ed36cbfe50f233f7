"""``adv2 demo``: PGD, ADV², StAdv and StAdv-based ADV² against every interpreter on an embedded model."""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path

import torch
import yaml
from tqdm.auto import tqdm

from adv2 import interpreters, metrics, models
from adv2._validate import check_eps, check_positive
from adv2.attacks import ADV2, PGD, StAdv
from adv2.attacks.flow import flow_loss
from adv2.data import CLASSES, NUM_CLASSES
from adv2.experiments.sampling import correctly_classified_shapes, target_classes
from adv2.experiments.store import (
    FLOW_KEYS,
    SUMMARY_KEYS,
    RunStore,
    atomic_write_bytes,
    discard_run,
    env_info,
    format_table,
    markdown_table,
    parse_shard,
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
    shard_spec = shard
    shard, n_shards = parse_shard(shard)
    if restart and n_shards > 1:
        raise ValueError("--restart discards the whole run directory, other shards' batches included; discard it "
                         "once (adv2 demo --restart without --shard, or delete it) before starting the shards")
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
            "; for your own classifier use the Python API (adv2.attacks.ADV2, adv2.data.image_folder)")
        raise ValueError(f"adv2 demo runs on the embedded models ({', '.join(models.EMBEDDED)}), got {model!r}{hint}")
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
    x_all, y_all, masks, idx = correctly_classified_shapes(net, n, seed=seed)
    for g in interps.values():
        g.validate(x_all)
    ct_all = target_classes(y_all, idx, seed, NUM_CLASSES)
    config = {
        "command": "demo", "model": model, "n": n, "seed": seed, "fast": fast, "batch_size": batch_size,
        "eps": eps, "alpha": alpha, "interpreters": list(interpreter_names), "attacks": list(attacks),
        "budgets": budget, "data": {"name": "shapes", "split": "test", "seed": seed, "indices": idx},
    }
    dist = _torchrun() if shard_spec is None else None  # (rank, world size) under torchrun
    if dist is not None:
        shard, n_shards = dist
        torch.distributed.init_process_group("gloo")
    lead = shard == 0 or dist is None  # under torchrun rank 0 prepares the directory and builds the results
    try:
        if restart and lead:
            discard_run(out)
        store = RunStore(out, config) if lead else None
        if dist is not None:
            torch.distributed.barrier()
        store = store or RunStore(out, config)
        batches = [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
        mine = [k for k in range(len(batches)) if k % n_shards == shard]
        todo = [k for k in mine if not store.done(k)]
        store.log(f"shard {shard}/{n_shards}: {len(todo)} of its {len(mine)} batches to run "
                  f"({len(batches)} in all, batch size {batch_size})")
        desc = f"demo {model}" + (f" [shard {shard}/{n_shards}]" if n_shards > 1 else "")
        bar = tqdm(total=len(todo) * (len(baselines) + len(interpreter_names)), desc=desc,
                   disable=not progress or (dist is not None and not lead))
        for k in todo:
            b = batches[k]
            torch.manual_seed(seed + k)  # nothing draws from it today; a batch must not depend on its predecessors
            rows, tensors = _run_batch(x_all[b], y_all[b], ct_all[b], masks[b], idx[b], baselines, interps,
                                       per_interp, attacks, bar)
            t_batch = time.time()
            store.save(k, rows, tensors)
            store.log(f"batch {k} done ({sum(r['seconds'] for r in rows):.1f} s of attacks, saved in "
                      f"{time.time() - t_batch:.2f} s)")
        bar.close()
        if dist is not None:
            torch.distributed.barrier()  # every rank's batches are stored
            if not lead:
                return None
        if not all(store.done(k) for k in range(len(batches))):
            if verbose:
                print(f"shard {shard}/{n_shards} finished ({len(mine)} of {len(batches)} batches) in {out}; "
                      f"run `adv2 merge {out}` once every shard has finished")
            return None
        return finish_run(out, verbose=verbose)
    finally:
        if dist is not None:
            torch.distributed.destroy_process_group()


def _torchrun() -> tuple[int, int] | None:
    """``(RANK, WORLD_SIZE)`` when started by ``torchrun`` with more than one process, else ``None``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    return int(os.environ["RANK"]), world


def _run_batch(x, y, ct, masks, ids, baselines, interps, per_interp, attacks, bar) -> tuple[list[dict], dict]:
    """Every attack against every interpreter on one batch: its per-example rows and tensors."""
    rows, tensors = [], {"x": x, "labels": y, "target_class": ct, "masks": masks,
                         "index": torch.as_tensor(ids, dtype=torch.long)}
    base_res = {}
    for a, atk in baselines.items():
        t0 = time.time()
        base_res[a] = (atk(x, ct), time.time() - t0)
        tensors[f"x_{a}"] = base_res[a][0].x_adv
        if a == "stadv":
            tensors["flow_stadv"] = base_res[a][0].flow
        bar.update()
    for name, g in interps.items():
        benign = g(x, y).detach()
        tensors[f"map_benign_{name}"] = benign
        for a in attacks:
            if a in baselines:
                res, sec = base_res[a]
                res.map = g(res.x_adv, ct).detach()
            else:
                t0 = time.time()
                res = per_interp[a][name](x, ct, target_map=benign)
                sec = time.time() - t0
                tensors[f"x_{a}_{name}"] = res.x_adv
                if res.flow is not None:
                    tensors[f"flow_{a}_{name}"] = res.flow
            atk = baselines[a] if a in baselines else per_interp[a][name]
            rows += evaluate_attack(a, name, res, benign, ids, sec, x=x, labels=y, targets=ct,
                                    iterations=iterations_of(atk))
            tensors[f"map_{a}_{name}"] = res.map.detach()
        bar.update()
    return rows, tensors


def finish_run(out: str | Path, verbose: bool = True) -> dict:
    """Build a demo run's results from its finished batches (all shards): ``examples.csv``,
    ``summary.json``, ``tensors.safetensors``, ``env.json``, ``maps.png``, ``summary.md``; return
    the summary (``adv2 merge``). A ``ValueError`` names the batches still missing."""
    out = Path(out)
    path = out / "config.yaml"
    if not path.exists():
        raise ValueError(f"{out} is not a run directory (no config.yaml)")
    config = yaml.safe_load(path.read_text())
    n, batch_size = config["n"], config["batch_size"]
    store = RunStore(out, config)
    examples, tensors = store.load(-(-n // batch_size))
    names, attacks = config["interpreters"], config["attacks"]
    order = {a: i for i, a in enumerate(ATTACKS)}
    rows = summarize(examples)
    rows.sort(key=lambda r: (names.index(r["interpreter"]), order[r["attack"]]))
    maps = {k: {a: tensors[f"map_{a}_{k}"] for a in ("benign", *attacks)} for k in names}
    pointing = {k: metrics.pointing_game(maps[k]["benign"], tensors["masks"]).float().mean() for k in names}
    benign_stats = {k: {"pointing_game": float(v)} for k, v in pointing.items()}
    summary = {"model": config["model"], "n": n, "seed": config["seed"], "rows": rows, "benign": benign_stats,
               "seconds": round(sum(e["seconds"] for e in examples), 1)}
    write_run(out, None, env_info(config["seed"], "cpu"), examples,  # the demo runs on the CPU
              summary, tensors)
    labels = [f"{CLASSES[int(y)]}→{CLASSES[int(t)]}" for y, t in zip(tensors["labels"], tensors["target_class"],
                                                                     strict=True)]
    maps_figure(tensors["x"], maps, out / "maps.png", labels=labels,
                title=f"{config['model']}: benign map and the maps under each attack (rows: true → target class)")
    keys = SUMMARY_KEYS + (FLOW_KEYS if any(a in attacks for a in ("stadv", "adv2-stadv")) else ())
    atomic_write_bytes(out / "summary.md", (markdown_table(rows, keys) + "\n").encode())
    store.log(f"results built from {len(examples)} rows")
    if verbose:
        print(format_table(rows, keys))
        print("benign pointing game: " + ", ".join(f"{k} {v['pointing_game']:.3f}" for k, v in benign_stats.items()))
        print(f"run directory: {out}  ({summary['seconds']:.0f} s of attacks)")
    return summary
