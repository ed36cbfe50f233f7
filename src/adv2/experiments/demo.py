"""``adv2 demo``: PGD, ADV², StAdv and StAdv-based ADV² against every interpreter on an embedded model.

The budgets and the attack registry live in :mod:`adv2.experiments.budgets`, the per-example rows
in :mod:`adv2.experiments.rows`; their names stay importable from here for older scripts.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from adv2 import interpreters, models
from adv2._validate import check_eps, check_positive
from adv2.experiments.budgets import ATTACKS, BASELINES, BUDGETS, INTERPRETERS, KNOWN, apply_overrides, iterations_of
from adv2.experiments.config import packaged_config, resolve
from adv2.experiments.rows import evaluate_attack
from adv2.experiments.runner import finish_run, run_experiment
from adv2.experiments.sources import model_name, model_spec
from adv2.experiments.store import parse_shard

__all__ = ["ATTACKS", "BASELINES", "BUDGETS", "INTERPRETERS", "KNOWN", "apply_overrides", "evaluate_attack",
           "finish_run", "iterations_of", "run_demo"]


def run_demo(model: str = "shapes-resnet", fast: bool = False, n: int | None = None, out: str | Path | None = None,
             seed: int = 0, batch_size: int = 32, interpreter_names=INTERPRETERS, eps: float = 0.031,
             alpha: float = 1 / 255, budgets: dict | None = None, overrides: list[str] | None = None,
             attacks=ATTACKS, shard: str | None = None, restart: bool = False, progress: bool = True,
             verbose: bool = True, weights: str | Path | None = None, device: str = "cpu") -> dict | None:
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
    entries of them (``["mask.n_step=2", "grad.flow.steps=100"]``, see :func:`apply_overrides`).

    ``model``: an embedded model, or your own 10-class shapes classifier as a factory
    ``package.module:function`` (with its state dict ``weights``; see :func:`adv2.models.from_factory`).
    ``device``: ``cpu`` (default), ``cuda``, ``cuda:K`` or ``auto`` (a GPU if there is one)."""
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
    if model not in models.EMBEDDED and not models.is_factory_ref(model):  # the demo's data is the shapes benchmark
        hint = "" if not isinstance(model, str) or "shapes" in model else (
            "; for your own classifier and images write a config for `adv2 run` (model: {name, weights}, "
            "data: {name: folder, root}) or use the Python API (adv2.attacks.ADV2)")
        raise ValueError(f"adv2 demo runs on the embedded models ({', '.join(models.EMBEDDED)}) or your own shapes "
                         f"classifier (package.module:function), got {model!r}{hint}")
    raw = yaml.safe_load(packaged_config("demo").read_text())
    spec = model if weights is None else model_spec(model, weights)
    raw.update(model=spec, data={"name": "shapes", "n": n, "seed": seed}, batch_size=batch_size, eps=eps,
               alpha=alpha, interpreters=list(interpreter_names), attacks=list(attacks), budgets=budget, device=device)
    cfg = resolve(raw, source="adv2 demo")
    label = model_name(spec).replace(":", "-")
    out = Path(out) if out is not None else Path("runs") / f"demo-{label}{'-fast' if fast else ''}"
    return run_experiment(cfg, out, shard=shard, restart=restart, progress=progress, verbose=verbose)
