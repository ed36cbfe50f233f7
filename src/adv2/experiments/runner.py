"""The experiment runner: one code path for ``adv2 run CONFIG.yaml`` and ``adv2 demo``.

:func:`run_experiment` takes a resolved config (:func:`adv2.experiments.config.resolve`), chooses
the examples, runs every attack against every interpreter batch by batch into a
:class:`~adv2.experiments.store.RunStore` (resumable, shardable, ``torchrun``-aware) and builds
the results with :func:`finish_run` (also ``adv2 merge``).

Inside a batch the work is a list of cells (:func:`_plan`: each baseline attack, then per
interpreter its maps and each ADV² attack against it, then the transfer measurements). A finished
cell is stored at once (:meth:`~adv2.experiments.store.RunStore.save_cell`) and a rerun reads it
back instead of running it again; each cell starts from the global torch generator seeded by
``(seed, batch, cell)`` (:func:`~adv2.experiments.batching.cell_seed`), so a resumed batch equals an
uninterrupted one (on the CPU; CUDA's non-deterministic kernels vary at rounding level). The
progress bar (:class:`~adv2.experiments.batching.RunProgress`) advances with the model's forward
passes and ``log.txt`` gets a line per finished cell.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import os
import sys
import time
import warnings
from pathlib import Path

import torch
import yaml
from tqdm.auto import tqdm

from adv2 import interpreters, metrics
from adv2._io import atomic_write_bytes, write_csv
from adv2.attacks import ADV2, PGD, StAdv
from adv2.attacks.result import AttackResult
from adv2.attacks.stadv import AT_FLOW_SETTINGS as MATCHED_SETTINGS
from adv2.attacks.stadv import mean_flow, stadv_at_flow
from adv2.data.selection import find_donors, select_examples, target_classes
from adv2.experiments.batching import RunProgress, cell_seed, split_on_oom
from adv2.experiments.budgets import ATTACKS, MATCHED, iterations_of
from adv2.experiments.rows import TRANSFER_KEYS, evaluate_attack, transfer_rows, with_true_label
from adv2.experiments.sources import (
    build_data,
    build_model,
    data_size,
    model_for_run,
    model_name,
    user_model_in_eval_mode,
)
from adv2.experiments.store import (
    FLOW_KEYS,
    JUDGE_KEYS,
    MATCHED_KEYS,
    SUMMARY_KEYS,
    DamagedFileError,
    RunStore,
    ci95,
    discard_run,
    env_info,
    parse_shard,
    summarize,
    write_run,
)
from adv2.experiments.targets import target_maps
from adv2.models import EMBEDDED, model_identity
from adv2.report import build_report, format_table, maps_figure, markdown_table

#: Columns of the report's main table (``summary.json["columns"]["rows"]``; the flow attacks add
#: :data:`~adv2.experiments.store.FLOW_KEYS`).
REPORT_KEYS = ("attack", "interpreter", "n", "success_rate", "success_rate_quantized", "confidence", "l1", "l2",
               "iou")


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """``cpu`` | ``cuda`` | ``cuda:K`` | ``auto`` → a device with an index; under ``torchrun`` a bare
    ``cuda`` is ``cuda:LOCAL_RANK`` (one device per rank), else the current CUDA device. A
    ``ValueError`` when CUDA is asked for but absent."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r}: CUDA is not available on this machine (use device: cpu or auto)")
        if name == "cuda":
            name = f"cuda:{local_rank if local_rank is not None else torch.cuda.current_device()}"
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
    if spec.get("name") in EMBEDDED and not spec.get("weights"):
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


@user_model_in_eval_mode
def run_experiment(cfg: dict, out: str | Path, shard: str | None = None, restart: bool = False,
                   progress: bool = True, verbose: bool = True, *, model: torch.nn.Module | None = None,
                   label: str | None = None) -> dict | None:
    """Run a resolved config into the run directory ``out`` and return the summary (``None`` for
    a shard or rank that does not build the results).

    The run is stored batch by batch: rerunning resumes it with per-example results identical to
    an uninterrupted run. ``shard="i/N"`` runs batches ``k ≡ i (mod N)``; the last shard to finish
    or :func:`finish_run` (``adv2 merge``) builds the results. Under ``torchrun`` (``RANK`` /
    ``WORLD_SIZE``, no ``shard``) rank r runs shard r/K over gloo and rank 0 builds the results.
    ``restart=True`` first discards what ``out`` holds of an earlier run.

    ``model``: the classifier to attack instead of the config's ``model`` — your own ``nn.Module``
    taking ``[0, 1]`` images (or already :class:`~adv2.models.Normalized`), on its own device, run in
    eval mode (its modes restored afterwards); ``label`` names it in the run directory and the report
    (default: its class name). Any config runs on it: ``run_experiment(load_config("q1"), out,
    model=net, label="mynet")``, or by name ``adv2.experiments.config.run_config("q1", out, model=net)``.
    The run directory records the model's identity (``model.json``: label, class, SHA-256 of its
    parameters and buffers); resuming it with another model or other weights is a ``ValueError``
    that says which differs, and nothing is overwritten."""
    if not isinstance(cfg, dict):
        raise ValueError(f"run_experiment takes a resolved config (adv2.experiments.config.load_config(...)), got "
                         f"{type(cfg).__name__}; for a config file or a shipped config by name call "
                         "adv2.experiments.config.run_config(CONFIG, out, model=..., label=...)")
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
    net, cfg["model"], device, identity = model_for_run(cfg["model"], model, label, device, data_size(cfg["data"]))
    if model is not None:
        cfg["device"] = str(device)  # the model's own device
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
    defenders = set(cfg.get("defender_seeds") or ())
    for a, by_name in per_interp.items():
        for name, atk in by_name.items():
            tr = getattr(atk, "tracker", None)
            if getattr(interps[name], "random", False) and hasattr(tr, "attack_seeds"):
                used = defenders & tr.attack_seeds(atk.steps)
                if used:
                    raise ValueError(f"defender_seeds {sorted(used)} are jitter seeds {a} uses against {name} "
                                     f"(seeds {tr.seed}..{tr.seed + tr.n_seeds - 1}"
                                     f"{', rotated at each fresh solve' if tr.rotate_seeds else ''}); a defender's "
                                     "seeds must be ones the attack never saw")
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
        if model_name(spec) == model_name(cfg["model"]):
            raise ValueError(f"transfer model {model_name(spec)!r} has the label of the model under attack; "
                             "give one of them another label")
        other = build_model(spec, device, data_size(cfg["data"]))
        identity.setdefault("transfer", {})[model_name(spec)] = model_identity(other, model_name(spec))
        others[model_name(spec)] = (other, _build_interpreters(other, names, budget, spec))

    data = build_data(cfg["data"])
    torch.manual_seed(seed)
    # y_all: the benign classes, the model's predictions (for the photographs, kept whatever the model
    # says; their person-given labels travel beside them as true_all)
    x_all, y_all, masks, idx, scanned = select_examples(net, data, cfg["data"]["n"], seed, device)
    true_all = data.load(idx)[1] if getattr(data, "selection", "correct") == "all" else None
    for g in interps.values():
        g.validate(x_all[:1].to(device))  # reads the shape only
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
        store = RunStore(out, stored, identity) if lead else None
        if dist is not None:
            torch.distributed.barrier()
        store = store or RunStore(out, stored, identity)
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
        for k in mine:  # a batch finished by a run killed before it removed its cell files
            if store.done(k):
                store.discard_cells(k)
        work = _Work(baselines, interps, per_interp, attacks, policy, seed, transfer, others,
                     model_name(cfg["model"]), device, defender_seeds=tuple(cfg.get("defender_seeds") or ()),
                     matched_flow=bool(cfg.get("matched_flow")))
        plan = _plan(work)
        store.log(f"shard {shard}/{n_shards}: {len(todo)} of its {len(mine)} batches to run "
                  f"({len(batches)} in all, batch size {batch_size}; {len(plan)} cells per batch: "
                  f"{', '.join(c.label for c in plan)})")
        desc = model_name(cfg["model"]) + (f" [{n_shards} ranks]" if dist is not None and lead else
                                           f" [shard {shard}/{n_shards}]" if n_shards > 1 else "")
        every_rank = os.environ.get("ADV2_PROGRESS_ALL_RANKS", "") not in ("", "0")  # else rank 0 only
        planned = [(cell, batches[k].stop - batches[k].start) for k in todo for c, cell in enumerate(plan)
                   if not store.cell_path(k, c, cell.tag).exists()]
        bar = tqdm(total=sum(b for _, b in planned), desc=desc, bar_format=BAR_FORMAT,
                   disable=not progress or (dist is not None and not lead and not every_rank))
        shares = [store.batch_dir / f"progress-rank-{r}.json" for r in range(n_shards)] if dist is not None else []
        prog = RunProgress(bar, share=shares[shard] if shares and not lead else None,
                           others=shares[1:] if shares and lead else None)
        for cell, b in planned:
            prog.plan(cell.tag, b, _passes_estimate(cell, work))
        hooks = _count_passes([net, *(o for o, _ in others.values())], prog.tick)
        try:
            for k in todo:
                b = batches[k]
                batch = {"x": x_all[b].to(device), "y": y_all[b].to(device), "ct": ct_all[b].to(device),
                         "ids": idx[b], "masks": masks[b] if masks is not None else None,
                         "true": true_all[b] if true_all is not None else None,
                         "x_donor": x_donor_all[b].to(device) if x_donor_all is not None else None}
                work.on_split = lambda size, k=k: store.log(f"batch {k}: {size} images did not fit in memory; "
                                                            "split in halves")
                rows, tensors = _run_cells(k, batch, plan, work, store, prog)
                t_batch = time.time()
                store.save(k, rows, tensors)
                store.discard_cells(k)  # the batch's two files hold everything its cells held
                store.log(f"batch {k} done ({sum(r['seconds'] for r in rows if 'seconds' in r):.1f} s of attacks, "
                          f"saved in {time.time() - t_batch:.2f} s)")
        except BaseException:
            bar.close()  # the finished cells are stored: rerunning the command resumes from the next one
            raise
        finally:
            for h in hooks:
                h.remove()
        if dist is not None:  # the job's bar moves on rank 0 while the other ranks finish their batches
            while not all(store.done(k) for k in range(len(batches))):
                prog.poll()
                time.sleep(1.0)
        prog.close()
        if dist is not None:
            torch.distributed.barrier()  # every rank's batches are stored
            if not lead:
                return None
            for path in shares:
                path.unlink(missing_ok=True)
        if not all(store.done(k) for k in range(len(batches))):
            if verbose:
                print(f"shard {shard}/{n_shards} finished ({len(mine)} of {len(batches)} batches) in {out}; "
                      f"run `adv2 merge {out}` once every shard has finished")
            return None
        return finish_run(out, verbose=verbose)
    finally:
        if dist is not None:
            torch.distributed.destroy_process_group()


#: The run's bar: image-cells done of all (an image × one attack × interpreter is one unit), the
#: running cell, its seconds per image and the time left from the measured rates (RunProgress).
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.0f} img·cells [{elapsed}{postfix}]"


@dataclasses.dataclass(frozen=True)
class _Cell:
    """One checkpointed piece of a batch: a baseline attack (``interpreter`` ``None``), an
    interpreter's maps (its benign and target maps and the baselines' maps, ``kind="maps"``), an
    ADV² attack against one interpreter, a random interpreter's maps under the defender seeds
    (``kind="judge"``), StAdv at ADV²-StAdv's flow sizes against one interpreter
    (``kind="matched"``), or the transfer measurements (``kind="transfer"``)."""

    kind: str  # "attack" | "maps" | "judge" | "matched" | "transfer"
    attack: str | None = None
    interpreter: str | None = None

    @property
    def tag(self) -> str:
        """The cell's name in file names and for its measured rates (the same in every batch)."""
        if self.kind == "attack":
            return self.attack if self.interpreter is None else f"{self.attack}-{self.interpreter}"
        return f"{self.kind}-{self.interpreter}" if self.kind in ("maps", "judge", "matched") else "transfer"

    @property
    def label(self) -> str:
        """The cell as the bar and the log name it (``adv2 × mask``)."""
        if self.kind == "attack":
            return self.attack if self.interpreter is None else f"{self.attack} × {self.interpreter}"
        if self.kind == "matched":
            return f"{MATCHED} × {self.interpreter}"
        return f"{self.kind} × {self.interpreter}" if self.kind in ("maps", "judge") else "transfer"


@dataclasses.dataclass
class _Work:
    """What the cells of every batch run with."""

    baselines: dict
    interps: dict
    per_interp: dict
    attacks: tuple
    policy: str
    seed: int
    transfer: dict
    others: dict
    source: str
    device: torch.device
    on_split: object = None
    defender_seeds: tuple = ()
    matched_flow: bool = False

    def judged(self, name: str) -> bool:
        """Whether interpreter ``name`` is judged over the defender seeds: it is random (MASK with
        jitter) and the attacks aim at the benign map."""
        return bool(self.defender_seeds) and self.policy == "benign" and getattr(self.interps[name], "random", False)


def _plan(w: _Work) -> list[_Cell]:
    """The cells of a batch, in the order they run: the baselines, then per interpreter its maps
    and the ADV² attacks against it, then the transfer measurements (if the config asks for any),
    then, for each random interpreter, its maps under the defender seeds, then (``matched_flow``)
    StAdv at ADV²-StAdv's flow sizes per interpreter (last, so that adding them moves no other
    cell's seed)."""
    cells = [_Cell("attack", a) for a in w.baselines]
    for name in w.interps:
        cells.append(_Cell("maps", interpreter=name))
        cells += [_Cell("attack", a, name) for a in w.attacks if a not in w.baselines]
    if w.transfer.get("interpreters") or w.others:
        cells.append(_Cell("transfer"))
    cells += [_Cell("judge", interpreter=name) for name in w.interps if w.judged(name)]
    if w.matched_flow:
        cells += [_Cell("matched", interpreter=name) for name in w.interps]
    return cells


def _map_passes(g) -> float:
    """About how many forward passes one map of ``g`` takes (MASK: its optimisation ``steps``)."""
    steps = getattr(g, "steps", 0)
    return float(steps) if isinstance(steps, int) and not isinstance(steps, bool) and steps > 0 else 1.0


def _passes_estimate(cell: _Cell, w: _Work) -> float:
    """About how many forward passes of the model ``cell`` makes (the bar's guess inside a kind of
    cell that has not run yet; the first cell of each kind measures the real count)."""
    if cell.kind == "attack":
        atk = w.baselines[cell.attack] if cell.interpreter is None else w.per_interp[cell.attack][cell.interpreter]
        warm, g = getattr(atk, "warmup", 0), getattr(atk, "interpreter", None)
        steps = iterations_of(atk) - warm
        final = 2 + (_map_passes(g) if g is not None else 0)  # the result's prediction and map
        tracker = getattr(atk, "tracker", None)
        opts = tracker.options() if tracker is not None and hasattr(tracker, "options") else {}
        if opts.get("n_step") and opts.get("n_reset"):  # MASK: its inner steps and its periodic fresh solves
            return warm + steps * (1 + opts["n_step"]) + (steps // opts["n_reset"] + 1) * (1 + _map_passes(g)) + final
        return warm + steps + 1 + final  # a pass per iteration (PGD, StAdv, ADV² against a one-pass map)
    if cell.kind == "maps":
        n_maps = 1 + (w.policy == "other") + sum(a in w.baselines for a in w.attacks)
        return n_maps * _map_passes(w.interps[cell.interpreter])
    if cell.kind == "judge":
        g = w.interps[cell.interpreter]
        fresh = sum(s != getattr(g, "seed", None) for s in w.defender_seeds)
        return fresh * (1 + len(w.attacks)) * _map_passes(g)
    if cell.kind == "matched":
        g = w.interps[cell.interpreter]
        judge = 2 * sum(s != getattr(g, "seed", None) for s in w.defender_seeds) if w.judged(cell.interpreter) else 0
        return len(MATCHED_SETTINGS) * (w.baselines["stadv"].steps + 1) + 2 + (1 + judge) * _map_passes(g)
    made = [a for a in w.attacks if a not in w.baselines]
    per_interp = sum(_map_passes(g) for g in w.interps.values())
    est = len(made) * len(w.interps) * per_interp if w.transfer.get("interpreters") else 0.0
    for _, o_interps in w.others.values():
        est += len(w.attacks) + sum(_map_passes(g) * (2 + len(w.attacks)) for g in o_interps.values())
    return est


def _count_passes(nets, tick) -> list:
    """Forward hooks that call ``tick()`` on every forward pass of the models ``nets`` (removed by
    the caller; they change nothing of the computation). A model that takes no hooks (a scripted
    one) is left out: the bar then moves cell by cell. A failure of the bar never stops the run:
    it is reported once and the bar stops following the passes."""
    handles, seen, broken = [], set(), []

    def hook(*_):
        if broken:
            return
        try:
            tick()
        except Exception as e:  # noqa: BLE001 — the progress display must not break an attack
            broken.append(e)
            warnings.warn(f"the progress bar stopped following the model's passes: {type(e).__name__}: {e}",
                          RuntimeWarning, stacklevel=2)

    for m in nets:
        if id(m) in seen:
            continue
        seen.add(id(m))
        try:
            handles.append(m.register_forward_hook(hook))
        except RuntimeError:
            pass
    return handles


def _callback(atk, prog: RunProgress) -> dict:
    """``callback=`` for an attack whose call reports its iterations (``callback(done, total)``)."""
    try:
        params = inspect.signature(atk.__call__).parameters
    except (TypeError, ValueError):
        return {}
    return {"callback": prog.iteration} if "callback" in params else {}


def _reported_iterations(cell: _Cell, w: _Work, prog: RunProgress) -> int | None:
    """The iterations the attack of ``cell`` will report through its callback, if it takes one."""
    if cell.kind != "attack":
        return None
    atk = w.baselines[cell.attack] if cell.interpreter is None else w.per_interp[cell.attack][cell.interpreter]
    return iterations_of(atk) if _callback(atk, prog) else None


#: The fields of an AttackResult a cell file keeps besides the batch's own tensors (``res.FIELD``).
_RESULT_FIELDS = ("success", "success_quantized", "confidence", "prediction", "map_distance")


def _result_tensors(res: AttackResult, x_key: str, flow_key: str, map_key: str | None) -> dict:
    out = {x_key: res.x_adv}
    if res.flow is not None:
        out[flow_key] = res.flow
    if map_key is not None and res.map is not None:
        out[map_key] = res.map.detach()
    out.update({f"res.{f}": getattr(res, f) for f in _RESULT_FIELDS if getattr(res, f) is not None})
    return out


def _result_from(t: dict, x_key: str, flow_key: str, map_key: str | None) -> AttackResult:
    return AttackResult(x_adv=t[x_key], success=t["res.success"], confidence=t["res.confidence"],
                        map=t.get(map_key) if map_key is not None else None,
                        success_quantized=t["res.success_quantized"], map_distance=t.get("res.map_distance"),
                        flow=t.get(flow_key), prediction=t.get("res.prediction"))


class _Batch:
    """What the cells of one batch have made so far (computed here or read back from their files)."""

    def __init__(self, batch: dict):
        self.x, self.y, self.ct, self.ids = batch["x"], batch["y"], batch["ct"], batch["ids"]
        self.x_donor, self.true = batch["x_donor"], batch.get("true")
        self.tensors = {"x": self.x, "labels": self.y, "target_class": self.ct,
                        "index": torch.as_tensor(self.ids, dtype=torch.long)}
        if batch["masks"] is not None:
            self.tensors["masks"] = batch["masks"]
        if self.x_donor is not None:
            self.tensors["x_donor"] = self.x_donor
        if self.true is not None:  # the data's own labels, where the benign class is the model's prediction
            self.tensors["true_labels"] = self.true
        self.base: dict[str, tuple[AttackResult, float]] = {}  # baseline -> (result, seconds)
        self.benign: dict[str, torch.Tensor] = {}
        self.target: dict[str, torch.Tensor] = {}
        self.adv: dict[tuple[str, str], AttackResult] = {}
        self.rows: dict[tuple[str, str | None], list[dict]] = {}

    def rows_of(self, new: list[dict]) -> list[dict]:
        if self.true is not None:
            new = [with_true_label(r, t) for r, t in zip(new, self.true.tolist(), strict=True)]
        return new

    def absorb(self, cell: _Cell, tensors: dict, record: dict, w: _Work) -> None:
        """Take in a finished cell's tensors and record (the same whether computed or read back)."""
        t = {k: v.to(w.device) for k, v in tensors.items()}
        self.tensors.update({k: v for k, v in t.items() if not k.startswith("res.")})
        for a, name, rows in record["rows"]:
            self.rows[(a, name)] = rows
        a, name = cell.attack, cell.interpreter
        if cell.kind == "attack" and name is None:
            self.base[a] = (_result_from(t, f"x_{a}", f"flow_{a}", None), float(record["attack_seconds"]))
        elif cell.kind == "attack":
            self.adv[(a, name)] = _result_from(t, f"x_{a}_{name}", f"flow_{a}_{name}", f"map_{a}_{name}")
        elif cell.kind == "matched":
            self.adv[(MATCHED, name)] = _result_from(t, f"x_{MATCHED}_{name}", f"flow_{MATCHED}_{name}",
                                                     f"map_{MATCHED}_{name}")
        elif cell.kind == "maps":
            self.benign[name] = t[f"map_benign_{name}"]
            self.target[name] = t.get(f"map_target_{name}", self.benign[name])
            for b in w.attacks:
                if b in w.baselines:
                    res = copy.copy(self.base[b][0])  # one result, a map per interpreter
                    res.map = t[f"map_{b}_{name}"]
                    self.adv[(b, name)] = res

    def compute(self, cell: _Cell, w: _Work, prog: RunProgress) -> tuple[dict, dict]:
        """Run ``cell``: its tensors and its record (rows as ``[attack, interpreter, rows]``)."""
        x, y, ct, ids = self.x, self.y, self.ct, self.ids
        a, name = cell.attack, cell.interpreter
        if cell.kind == "attack" and name is None:  # a baseline: one result, measured under every interpreter
            atk = w.baselines[a]
            t0 = _clock(x)
            res = split_on_oom(atk, x, ct, on_split=w.on_split, **_callback(atk, prog))
            sec = _clock(x) - t0
            return _result_tensors(res, f"x_{a}", f"flow_{a}", None), {"rows": [], "attack_seconds": sec}
        if cell.kind == "attack":
            atk = w.per_interp[a][name]
            target = self.target[name]
            t0 = _clock(x)
            res = split_on_oom(atk, x, ct, target_map=target, on_split=w.on_split, **_callback(atk, prog))
            sec = _clock(x) - t0
            rows = self.rows_of(evaluate_attack(a, name, res, target, ids, sec, x=x, labels=y, targets=ct,
                                                iterations=iterations_of(atk)))
            return (_result_tensors(res, f"x_{a}_{name}", f"flow_{a}_{name}", f"map_{a}_{name}"),
                    {"rows": [[a, name, rows]], "attack_seconds": sec})
        if cell.kind == "maps":
            g = w.interps[name]
            benign = split_on_oom(g, x, y, on_split=w.on_split).detach()
            target = target_maps(w.policy, g, benign, self.x_donor, ct, ids, w.seed)
            tensors, rows = {f"map_benign_{name}": benign}, []
            if w.policy != "benign":
                tensors[f"map_target_{name}"] = target
            for b in w.attacks:
                if b in w.baselines:
                    res, sec = copy.copy(self.base[b][0]), self.base[b][1]
                    res.map = tensors[f"map_{b}_{name}"] = split_on_oom(g, res.x_adv, ct, on_split=w.on_split).detach()
                    rows.append([b, name, self.rows_of(evaluate_attack(
                        b, name, res, target, ids, sec, x=x, labels=y, targets=ct,
                        iterations=iterations_of(w.baselines[b])))])
            return tensors, {"rows": rows}
        if cell.kind == "matched":  # StAdv per example at ADV²-StAdv's flow size: the two at equal perturbation
            g, st = w.interps[name], w.baselines["stadv"]
            want = mean_flow(self.adv[("adv2-stadv", name)].flow)
            t0 = _clock(x)
            res = split_on_oom(lambda xs, cs, ws: stadv_at_flow(st.model, xs, cs, ws, settings=MATCHED_SETTINGS,
                                                                steps=st.steps, interpreter=g),
                               x, ct, want, on_split=w.on_split)
            sec = _clock(x) - t0
            rows = self.rows_of(evaluate_attack(MATCHED, name, res, self.target[name], ids, sec, x=x, labels=y,
                                                targets=ct, iterations=len(MATCHED_SETTINGS) * st.steps))
            if w.judged(name):  # a random interpreter: the matched example's maps under the defender seeds too
                known = {"benign": self.benign[name], MATCHED: res.map}
                l1, floor = _defender_distances(g, x, y, {MATCHED: (res.x_adv, ct)}, w.defender_seeds, known,
                                                w.on_split)
                rows = [dict(r, l1_defender=float(l1[MATCHED][j]), noise_floor=float(floor[j]))
                        for j, r in enumerate(rows)]
            return (_result_tensors(res, f"x_{MATCHED}_{name}", f"flow_{MATCHED}_{name}", f"map_{MATCHED}_{name}"),
                    {"rows": [[MATCHED, name, rows]], "attack_seconds": sec})
        if cell.kind == "judge":  # a random interpreter as a defender sees it: maps under seeds the attack never saw
            g = w.interps[name]
            examples = {a: (self.adv[(a, name)].x_adv, ct) for a in w.attacks}
            known = {"benign": self.benign[name], **{a: self.adv[(a, name)].map for a in w.attacks}}
            l1, floor = _defender_distances(g, x, y, examples, w.defender_seeds, known, w.on_split)
            rows = [[a, name, [dict(r, l1_defender=float(l1[a][j]), noise_floor=float(floor[j]))
                               for j, r in enumerate(self.rows[(a, name)])]] for a in w.attacks]
            return {}, {"rows": rows}
        rows = []  # transfer: ADV² made against A, measured under every B (baselines ignore A)
        if w.transfer.get("interpreters"):
            for b in (b for b in w.attacks if b not in w.baselines):
                for made in w.interps:
                    res = self.adv[(b, made)]
                    for other_name, g in w.interps.items():
                        m = res.map if other_name == made else split_on_oom(g, res.x_adv, ct,
                                                                            on_split=w.on_split).detach()
                        rows += transfer_rows(b, made, w.source, other_name, res.success, m, self.target[other_name],
                                              ids)
        for other, (net, o_interps) in w.others.items():  # made on the source model, measured on another
            with torch.no_grad():
                preds = {key: split_on_oom(net, res.x_adv, on_split=w.on_split).argmax(1)
                         for key, res in self.adv.items()}
            for other_name, g in o_interps.items():
                benign = split_on_oom(g, x, y, on_split=w.on_split).detach()
                target = target_maps(w.policy, g, benign, self.x_donor, ct, ids, w.seed)
                for b in w.attacks:
                    res = self.adv[(b, other_name)]
                    m = split_on_oom(g, res.x_adv, ct, on_split=w.on_split).detach()
                    rows += transfer_rows(b, other_name, other, other_name, preds[(b, other_name)] == ct, m, target,
                                          ids)
        return {}, {"rows": [["transfer", None, rows]]}


def _clock(x: torch.Tensor) -> float:
    """Wall-clock seconds, after the GPU has finished the work queued on ``x``'s device (CUDA runs
    asynchronously: without it a cell's time would miss its last kernels)."""
    if x.device.type == "cuda":  # pragma: no cover - no GPU in CI
        torch.cuda.synchronize(x.device)
    return time.time()


def _defender_distances(g, x, y, examples: dict, seeds, known: dict, on_split) -> tuple[dict, torch.Tensor]:
    """:func:`adv2.metrics.defender_distances`, the batch split in halves where it does not fit in
    memory (every tensor it takes and returns is per example)."""
    names, kept = list(examples), list(known)

    def run(xs, ys, *flat):
        ex = {a: (flat[2 * i], flat[2 * i + 1]) for i, a in enumerate(names)}
        kn = {k: flat[2 * len(names) + i] for i, k in enumerate(kept)}
        return metrics.defender_distances(g, xs, ys, ex, seeds, known=kn)

    flat = [t for a in names for t in examples[a]] + [known[k] for k in kept]
    return split_on_oom(run, x, y, *flat, on_split=on_split)


def _run_cells(k: int, batch: dict, plan: list[_Cell], w: _Work, store: RunStore, prog: RunProgress,
               ) -> tuple[list[dict], dict]:
    """Every cell of batch ``k``: those with a file from an earlier (killed) run are read back, the
    others run (each from the global generator seeded by :func:`cell_seed`) and are stored as soon
    as they finish. Returns the batch's rows and tensors, as one uninterrupted run makes them."""
    st, n, read, logged = _Batch(batch), len(batch["ids"]), [], False
    for c, cell in enumerate(plan):
        got = None
        try:
            got = store.load_cell(k, c, cell.tag)
        except DamagedFileError as e:
            msg = f"{e.path} does not read back ({e.reason}); recomputing cell {c + 1} ({cell.label}) of batch {k}"
            print(f"adv2: warning: {msg}", file=sys.stderr, flush=True)
            store.log(f"warning: {msg}")
            e.path.unlink(missing_ok=True)
        if got is not None and got[1].get("images") != n:
            got = None  # not this batch's (cannot happen under one config): run it again
        if got is not None:
            tensors, record = got
            read.append(f"{c + 1} {cell.label}")
            prog.learn(cell.tag, n, float(record.get("seconds", 0.0)), int(record.get("passes", 0)),
                       _passes_estimate(cell, w))
        else:
            if read and not logged:
                store.log(f"batch {k}: {len(read)} of {len(plan)} cells read back from an earlier run, not "
                          f"recomputed ({', '.join(read)})")
                logged = True
            torch.manual_seed(cell_seed(w.seed, k, c))
            prog.begin(cell.tag, cell.label, n, _passes_estimate(cell, w), _reported_iterations(cell, w, prog))
            t0 = time.time()
            tensors, record = st.compute(cell, w, prog)
            seconds = time.time() - t0
            passes = prog.end(seconds)
            record.update(cell=cell.tag, images=n, seconds=seconds, passes=passes)
            store.save_cell(k, c, cell.tag, tensors, record)
            store.log(f"batch {k} cell {c + 1}/{len(plan)} {cell.label}: {n} images in {seconds:.1f} s "
                      f"({seconds / n:.2f} s/img, {passes} model passes)")
        st.absorb(cell, tensors, record, w)
    if read and not logged:
        store.log(f"batch {k}: all {len(plan)} cells read back from an earlier run, not recomputed")
    rows = [r for name in w.interps for a in w.attacks for r in st.rows[(a, name)]]
    rows += [r for name in w.interps for r in st.rows.get((MATCHED, name), [])]
    rows += st.rows.get(("transfer", None), [])
    return rows, st.tensors


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
    order = {a: i for i, a in enumerate((*ATTACKS, MATCHED))}
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
    extra = FLOW_KEYS if any(a in attacks for a in ("stadv", "adv2-stadv")) else ()
    if any("l1_defender" in r for r in rows):  # a random interpreter judged over the defender seeds
        extra = (*extra, *JUDGE_KEYS)
        summary["defender_seeds"] = config.get("defender_seeds")
    if any(r["attack"] == MATCHED for r in rows):  # StAdv at ADV²-StAdv's flow sizes
        extra = (*extra, *MATCHED_KEYS)
    # the tables' columns travel with the results: the report reads them from the run directory
    summary["columns"] = {"rows": [*REPORT_KEYS, *extra], "transfer": list(TRANSFER_KEYS)}
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
    keys = SUMMARY_KEYS + extra
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
