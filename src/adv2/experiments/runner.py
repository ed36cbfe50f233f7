"""The experiment runner: one code path for ``adv2 run CONFIG.yaml`` and ``adv2 demo``.

:func:`run_experiment` takes a resolved config (:func:`adv2.experiments.config.resolve`), chooses
the examples, runs every attack against every interpreter batch by batch into a
:class:`~adv2.experiments.store.RunStore` (resumable, shardable, ``torchrun``-aware) and builds
the results with :func:`finish_run` (also ``adv2 merge``).
"""

from __future__ import annotations

import copy
import os
import sys
import time
from pathlib import Path

import torch
import yaml
from tqdm.auto import tqdm

from adv2 import interpreters, metrics
from adv2._io import atomic_write_bytes, write_csv
from adv2.attacks import ADV2, PGD, StAdv
from adv2.data.selection import find_donors, select_examples, target_classes
from adv2.experiments.batching import split_on_oom
from adv2.experiments.budgets import ATTACKS, iterations_of
from adv2.experiments.rows import TRANSFER_KEYS, evaluate_attack, transfer_rows, with_true_label
from adv2.experiments.sources import build_data, build_model, model_name
from adv2.experiments.store import (
    FLOW_KEYS,
    SUMMARY_KEYS,
    RunStore,
    ci95,
    discard_run,
    env_info,
    parse_shard,
    summarize,
    write_run,
)
from adv2.experiments.targets import target_maps
from adv2.models import EMBEDDED
from adv2.report import build_report, format_table, maps_figure, markdown_table

#: Columns of the report's main table (``summary.json["columns"]["rows"]``; the flow attacks add
#: :data:`~adv2.experiments.store.FLOW_KEYS`).
REPORT_KEYS = ("attack", "interpreter", "n", "success_rate", "success_rate_quantized", "confidence", "l1", "l2",
               "iou")


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """``cpu`` | ``cuda`` | ``cuda:K`` | ``auto`` → a device; under ``torchrun`` a bare ``cuda`` is
    ``cuda:LOCAL_RANK`` (one device per rank). A ``ValueError`` when CUDA is asked for but absent."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r}: CUDA is not available on this machine (use device: cpu or auto)")
        if name == "cuda" and local_rank is not None:
            name = f"cuda:{local_rank}"
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA devices")
        return dev
    return torch.device("cpu")


def _no_rts(name: str, spec) -> str:
    """The one-line refusal of ``rts`` / ``rts-aid`` for a model without a trained RTS network,
    naming what makes one."""
    spec = {"name": spec} if isinstance(spec, str) else dict(spec)
    cmd = "adv2 train-rts" if name == "rts" else "adv2 train-aid"
    label = model_name(spec)
    if spec["name"] in EMBEDDED and not spec.get("weights"):
        return f"interpreter {name}: no trained RTS network for {label}; make one with `{cmd} --model {label}`"
    call = ("adv2.interpreters.rts.train_rts(model, x, y, out=DIR, name=NAME)" if name == "rts" else
            "adv2.defenses.aid(model, rts, out=DIR, name=NAME)")
    stem = "rts" if name == "rts" else "rts-aid"
    return (f"interpreter {name}: no trained RTS network for {label} (`{cmd} --model M` makes them for the embedded "
            f"models {', '.join(EMBEDDED)} only); train one in Python with {call} and set "
            f"budgets.{name}.interpreter.checkpoint: DIR/{stem}-NAME.safetensors, or leave {name} out of interpreters")


def _build_interpreters(net, names, budgets, spec=None) -> dict:
    out = {}
    for name in names:
        kwargs = dict(budgets.get(name, {}).get("interpreter", {}))
        try:
            out[name] = interpreters.get(name, net, **kwargs)
        except TypeError as e:
            raise ValueError(f"bad setting for {name}: {e}") from None
        except ValueError:
            if name in ("rts", "rts-aid") and "checkpoint" not in kwargs and spec is not None:
                raise ValueError(_no_rts(name, spec)) from None
            raise
    return out


def _torchrun() -> tuple[int, int] | None:
    """``(RANK, WORLD_SIZE)`` when started by ``torchrun`` with more than one process, else ``None``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    return int(os.environ["RANK"]), world


def run_experiment(cfg: dict, out: str | Path, shard: str | None = None, restart: bool = False,
                   progress: bool = True, verbose: bool = True) -> dict | None:
    """Run a resolved config into the run directory ``out`` and return the summary (``None`` for
    a shard or rank that does not build the results).

    The run is stored batch by batch: rerunning resumes it with per-example results identical to
    an uninterrupted run. ``shard="i/N"`` runs batches ``k ≡ i (mod N)``; the last shard to finish
    or :func:`finish_run` (``adv2 merge``) builds the results. Under ``torchrun`` (``RANK`` /
    ``WORLD_SIZE``, no ``shard``) rank r runs shard r/K over gloo and rank 0 builds the results.
    ``restart=True`` first discards what ``out`` holds of an earlier run."""
    cfg = copy.deepcopy(cfg)
    shard_spec = shard
    shard, n_shards = parse_shard(shard)
    if restart and n_shards > 1:
        raise ValueError("--restart discards the whole run directory, other shards' batches included; discard it "
                         "once (--restart without --shard, or delete it) before starting the shards")
    if shard_spec is not None and _torchrun() is not None:
        raise ValueError("--shard and torchrun do not combine: under torchrun each rank takes its own shard")
    dist = _torchrun()  # (rank, world size) under torchrun
    local_rank = int(os.environ.get("LOCAL_RANK", "0")) if dist is not None else None
    if dist is not None and str(cfg.get("device", "cpu")).startswith("cuda:"):
        raise ValueError("under torchrun write device: cuda (rank r takes cuda:LOCAL_RANK), not a fixed cuda:K")
    device = resolve_device(cfg.get("device", "cpu"), local_rank)
    if device.type == "cuda":  # pragma: no cover - no GPU in CI
        torch.cuda.set_device(device)
    budget, attacks, names = cfg["budgets"], tuple(cfg["attacks"]), tuple(cfg["interpreters"])
    seed, policy = cfg["data"]["seed"], cfg.get("target_map", "benign")

    # build everything before any work, so that bad settings fail at once
    net = build_model(cfg["model"], device)
    interps = _build_interpreters(net, names, budget, cfg["model"])
    per_interp = {a: {} for a in ("adv2", "adv2-stadv") if a in attacks}
    for name in names:
        kwargs = {k: v for k, v in budget.get(name, {}).items() if k not in ("interpreter", "flow")}
        flow_kwargs = budget.get(name, {}).get("flow", {})
        try:
            if "adv2" in attacks:
                per_interp["adv2"][name] = ADV2(net, interps[name], eps=cfg["eps"], alpha=cfg["alpha"], **kwargs)
            if "adv2-stadv" in attacks:
                per_interp["adv2-stadv"][name] = ADV2(net, interps[name], perturbation="flow", **flow_kwargs)
        except TypeError as e:  # an unknown keyword from --set
            raise ValueError(f"bad setting for {name}: {e}") from None
    baselines = {}
    for a, cls, extra in (("pgd", PGD, dict(eps=cfg["eps"], alpha=cfg["alpha"])), ("stadv", StAdv, {})):
        if a in attacks:
            try:
                baselines[a] = cls(net, **extra, **budget.get(a, {}))
            except TypeError as e:
                raise ValueError(f"bad setting for {a}: {e}") from None
    transfer = cfg.get("transfer") or {}
    others = {}
    for spec in transfer.get("models", []):
        other = build_model(spec, device)
        others[model_name(spec)] = (other, _build_interpreters(other, names, budget, spec))

    data = build_data(cfg["data"])
    torch.manual_seed(seed)
    # y_all: the benign classes, the model's predictions (for the photographs, kept whatever the model
    # says; their person-given labels travel beside them as true_all)
    x_all, y_all, masks, idx, scanned = select_examples(net, data, cfg["data"]["n"], seed, device)
    true_all = data.load(idx)[1] if getattr(data, "selection", "correct") == "all" else None
    for g in interps.values():
        g.validate(x_all.to(device))
    num_classes = int(net(x_all[:1].to(device)).shape[1])
    # targets: any class of the model; for the `other` policy, a class the folder has images of
    allowed = data.present_classes() if policy == "other" and data.name == "folder" else None
    ct_all = target_classes(y_all, idx, seed, num_classes, allowed)
    donors = find_donors(net, data, ct_all, idx, seed, device) if policy == "other" else None
    x_donor_all = data.load(donors)[0] if donors else None
    stored = copy.deepcopy(cfg)
    stored["data"]["indices"] = idx
    if donors:
        stored["data"]["donors"] = donors
    if data.name == "photos":
        stored["data"]["names"] = [data.names[i] for i in idx]
    stored["classes"] = [data.class_name(k) for k in range(data.num_classes)] if data.name == "folder" \
        else list(data.classes)
    n, batch_size = len(idx), cfg["batch_size"]

    if dist is not None:
        shard, n_shards = dist
        torch.distributed.init_process_group("gloo")  # the ranks only meet at barriers
    lead = shard == 0 or dist is None  # under torchrun rank 0 prepares the directory and builds the results
    try:
        if restart and lead:
            discard_run(out)
        store = RunStore(out, stored) if lead else None
        if dist is not None:
            torch.distributed.barrier()
        store = store or RunStore(out, stored)
        if lead:
            store.log(f"{n} examples of {data.describe()} ({scanned} scanned) on {device}")
            if true_all is not None:
                differ = [f"{data.names[i] if hasattr(data, 'names') else i}: {data.class_name(int(p))} "
                          f"(labelled {data.class_name(int(t))})" for i, p, t in zip(idx, y_all, true_all, strict=True)
                          if int(p) != int(t)]
                store.log(f"benign class = the model's prediction; it differs from the given label on {len(differ)} "
                          f"of {n}" + (": " + "; ".join(differ) if differ else ""))
        batches = [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
        mine = [k for k in range(len(batches)) if k % n_shards == shard]
        for k in mine:  # a stored batch that no longer reads back is run again
            bad = store.damaged(k)
            if bad is not None:
                msg = f"{bad[0]} does not read back ({bad[1]}); recomputing batch {k}"
                print(f"adv2: warning: {msg}", file=sys.stderr, flush=True)
                store.log(f"warning: {msg}")
                store.discard(k)
        todo = [k for k in mine if not store.done(k)]
        store.log(f"shard {shard}/{n_shards}: {len(todo)} of its {len(mine)} batches to run "
                  f"({len(batches)} in all, batch size {batch_size})")
        desc = model_name(cfg["model"]) + (f" [shard {shard}/{n_shards}]" if n_shards > 1 else "")
        every_rank = os.environ.get("ADV2_PROGRESS_ALL_RANKS", "") not in ("", "0")  # else rank 0 only
        cells = len(baselines) + len(names) * len(per_interp)  # attack runs per image
        images = sum(batches[k].stop - batches[k].start for k in todo)
        bar = tqdm(total=images * cells, desc=desc, unit="img",
                   disable=not progress or (dist is not None and not lead and not every_rank))
        for k in todo:
            b = batches[k]
            torch.manual_seed(seed + k)  # nothing draws from it today; a batch must not depend on its predecessors
            batch = {"x": x_all[b].to(device), "y": y_all[b].to(device), "ct": ct_all[b].to(device), "ids": idx[b],
                     "masks": masks[b] if masks is not None else None,
                     "true": true_all[b] if true_all is not None else None,
                     "x_donor": x_donor_all[b].to(device) if x_donor_all is not None else None}
            rows, tensors = _run_batch(batch, baselines, interps, per_interp, attacks, policy, seed, transfer,
                                       others, model_name(cfg["model"]), bar,
                                       lambda size, k=k: store.log(f"batch {k}: {size} images did not fit in memory;"
                                                                   " split in halves"))
            t_batch = time.time()
            store.save(k, rows, tensors)
            store.log(f"batch {k} done ({sum(r['seconds'] for r in rows if 'seconds' in r):.1f} s of attacks, "
                      f"saved in {time.time() - t_batch:.2f} s)")
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


def _run_batch(batch, baselines, interps, per_interp, attacks, policy, seed, transfer, others, source,
               bar, on_split=None) -> tuple[list[dict], dict]:
    """Every attack against every interpreter on one batch (and the transfer measurements the
    config asks for): its rows and tensors. A computation that runs out of memory is repeated on
    halves of the batch (:func:`~adv2.experiments.batching.split_on_oom`; the same results)."""
    x, y, ct, ids = batch["x"], batch["y"], batch["ct"], batch["ids"]
    tensors = {"x": x, "labels": y, "target_class": ct, "index": torch.as_tensor(ids, dtype=torch.long)}
    if batch["masks"] is not None:
        tensors["masks"] = batch["masks"]
    if batch["x_donor"] is not None:
        tensors["x_donor"] = batch["x_donor"]
    true = batch.get("true")
    if true is not None:  # the data's own labels, where the benign class is the model's prediction
        tensors["true_labels"] = true
    rows, base_res, targets, adv = [], {}, {}, {}
    for a, atk in baselines.items():
        bar.set_postfix_str(a)
        t0 = time.time()
        base_res[a] = (split_on_oom(atk, x, ct, on_split=on_split), time.time() - t0)
        tensors[f"x_{a}"] = base_res[a][0].x_adv
        if a == "stadv":
            tensors["flow_stadv"] = base_res[a][0].flow
        bar.update(len(x))
        bar.set_postfix_str(f"{a}: {base_res[a][1] / len(x):.2f} s/img")
    for name, g in interps.items():
        benign = split_on_oom(g, x, y, on_split=on_split).detach()
        target = targets[name] = target_maps(policy, g, benign, batch["x_donor"], ct, ids, seed)
        tensors[f"map_benign_{name}"] = benign
        if policy != "benign":
            tensors[f"map_target_{name}"] = target
        for a in attacks:
            if a in baselines:
                res, sec = copy.copy(base_res[a][0]), base_res[a][1]  # one result, a map per interpreter
                res.map = g(res.x_adv, ct).detach()
            else:
                bar.set_postfix_str(f"{a} × {name}")
                t0 = time.time()
                res = split_on_oom(per_interp[a][name], x, ct, target_map=target, on_split=on_split)
                sec = time.time() - t0
                bar.update(len(x))
                bar.set_postfix_str(f"{a} × {name}: {sec / len(x):.2f} s/img")
                tensors[f"x_{a}_{name}"] = res.x_adv
                if res.flow is not None:
                    tensors[f"flow_{a}_{name}"] = res.flow
            adv[(a, name)] = res
            atk = baselines[a] if a in baselines else per_interp[a][name]
            new = evaluate_attack(a, name, res, target, ids, sec, x=x, labels=y, targets=ct,
                                  iterations=iterations_of(atk))
            if true is not None:
                new = [with_true_label(r, t) for r, t in zip(new, true.tolist(), strict=True)]
            rows += new
            tensors[f"map_{a}_{name}"] = res.map.detach()
    if transfer.get("interpreters"):  # ADV² made against A, measured under every B (baselines ignore A)
        for a in (a for a in attacks if a not in baselines):
            for made in interps:
                res = adv[(a, made)]
                for name, g in interps.items():
                    m = res.map if name == made else g(res.x_adv, ct).detach()
                    rows += transfer_rows(a, made, source, name, res.success, m, targets[name], ids)
    for other, (net, o_interps) in others.items():  # made on the source model, measured on another
        with torch.no_grad():
            preds = {key: net(res.x_adv).argmax(1) for key, res in adv.items()}
        for name, g in o_interps.items():
            benign = g(x, y).detach()
            target = target_maps(policy, g, benign, batch["x_donor"], ct, ids, seed)
            for a in attacks:
                res = adv[(a, name)]
                m = g(res.x_adv, ct).detach()
                rows += transfer_rows(a, name, other, name, preds[(a, name)] == ct, m, target, ids)
    return rows, tensors


def _summarize_transfer(trows: list[dict], main: list[dict]) -> list[dict]:
    """One row per (attack, made against, model, measured by): success rate on that model over all
    examples; map distances to that interpreter's target map, averaged over the examples on which
    the attack succeeded on the source model (as the main table)."""
    ok = {(e["attack"], e["interpreter"], e["index"]) for e in main if e["success"]}
    groups: dict[tuple, list[dict]] = {}
    for e in trows:
        groups.setdefault((e["attack"], e["interpreter"], e["model"], e["measured_by"]), []).append(e)
    out = []
    for (a, made, model, by), es in groups.items():
        good = [e for e in es if (a, made, e["index"]) in ok]
        row = {"attack": a, "interpreter": made, "model": model, "measured_by": by, "n": len(es),
               "success_rate": sum(e["success"] for e in es) / len(es)}
        for k in ("l1", "l2", "iou"):
            row[k] = sum(e[k] for e in good) / len(good) if good else None
        row["l1_ci95"] = ci95([e["l1"] for e in good])
        out.append(row)
    return out


def finish_run(out: str | Path, verbose: bool = True) -> dict:
    """Build a run's results from its finished batches (all shards): ``examples.csv``,
    ``summary.json``, ``tensors.safetensors``, ``env.json``, ``maps.png``, ``summary.md`` (and,
    with transfer measurements, ``transfer.csv``) and the report (``report.html``, ``report.md``,
    ``figures/``, :func:`adv2.report.build_report`); return the summary (``adv2 merge``). A
    ``ValueError`` names the batches still missing."""
    out = Path(out)
    path = out / "config.yaml"
    if not path.exists():
        raise ValueError(f"{out} is not a run directory (no config.yaml)")
    config = yaml.safe_load(path.read_text())
    if not isinstance(config, dict) or "indices" not in (config.get("data") or {}):
        raise ValueError(f"{out}/config.yaml is not the config of an adv2 run")
    n, batch_size = len(config["data"]["indices"]), config["batch_size"]
    store = RunStore(out, config)
    everything, tensors = store.load(-(-n // batch_size))
    examples = [e for e in everything if "measured_by" not in e]
    trows = [e for e in everything if "measured_by" in e]
    names, attacks = config["interpreters"], config["attacks"]
    order = {a: i for i, a in enumerate(ATTACKS)}
    rows = summarize(examples)
    rows.sort(key=lambda r: (names.index(r["interpreter"]), order[r["attack"]]))
    maps = {k: {a: tensors[f"map_{a}_{k}"] for a in ("benign", "target", *attacks) if f"map_{a}_{k}" in tensors}
            for k in names}
    summary = {"model": model_name(config["model"]), "n": n, "seed": config["data"]["seed"],
               "target_map": config.get("target_map", "benign"), "rows": rows}
    if "masks" in tensors:
        summary["benign"] = {k: {"pointing_game": float(metrics.pointing_game(maps[k]["benign"], tensors["masks"])
                                                        .float().mean())} for k in names}
    if trows:
        summary["transfer"] = _summarize_transfer(trows, examples)
    summary["seconds"] = round(sum(e["seconds"] for e in examples), 1)
    flow = FLOW_KEYS if any(a in attacks for a in ("stadv", "adv2-stadv")) else ()
    # the tables' columns travel with the results: the report reads them from the run directory
    summary["columns"] = {"rows": [*REPORT_KEYS, *flow], "transfer": list(TRANSFER_KEYS)}
    try:  # the device the batches ran on (``auto`` resolved on this machine)
        device = str(resolve_device(config.get("device", "cpu")))
    except ValueError:
        device = str(config.get("device", "cpu"))
    write_run(out, None, env_info(config["data"]["seed"], device), examples, summary, tensors)
    if trows:
        write_csv(out / "transfer.csv", trows)
    classes = config.get("classes") or []

    def cname(k: int) -> str:
        return str(classes[k]) if k < len(classes) else str(k)

    labels = [f"{cname(int(y))}→{cname(int(t))}" for y, t in zip(tensors["labels"], tensors["target_class"],
                                                                  strict=True)]
    what = "predicted" if "true_labels" in tensors else "true"
    maps_figure(tensors["x"], maps, out / "maps.png", labels=labels,
                title=f"{summary['model']}: benign map and the maps under each attack (rows: {what} → target class)")
    keys = SUMMARY_KEYS + flow
    md = markdown_table(rows, keys) + "\n"
    if trows:
        md += "\n" + markdown_table(summary["transfer"], TRANSFER_KEYS) + "\n"
    atomic_write_bytes(out / "summary.md", md.encode())
    report = build_report(out)
    store.log(f"results built from {len(examples)} rows; report {report.name}")
    if verbose:
        print(format_table(rows, keys))
        if trows:
            print("\ntransfer (made against `interpreter` on the source model, measured on `model` by `measured_by`):")
            print(format_table(summary["transfer"], TRANSFER_KEYS))
        if "benign" in summary:
            print("benign pointing game: " + ", ".join(f"{k} {v['pointing_game']:.3f}"
                                                       for k, v in summary["benign"].items()))
        print(f"run directory: {out}  ({summary['seconds']:.0f} s of attacks; report: {report})")
    return summary
