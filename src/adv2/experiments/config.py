"""Experiment configs (``adv2 run CONFIG.yaml``): loading, ``--set`` overrides, validation.

A config is a YAML mapping; every key is checked before any work, and an unknown key or a bad
value is a ``ValueError`` naming the key and what it accepts. Today's configs run on the
embedded shapes data (``data.name: shapes``); they are executed by the same runner as
``adv2 demo`` (:func:`adv2.experiments.demo.run_demo`).
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from adv2 import interpreters, models
from adv2._validate import check_eps, check_positive

#: Keys of a config and what they mean (``data`` and ``budgets`` are mappings, below).
KEYS = {
    "model": "an embedded model name",
    "data": "a mapping: name (shapes), n (images), seed",
    "batch_size": "a positive integer",
    "eps": "the L∞ budget in (0, 1]",
    "alpha": "the L∞ step size, a positive number",
    "interpreters": "a list of interpreter names",
    "attacks": "a list, some of pgd, adv2, stadv, adv2-stadv",
    "budgets": "default, fast, or a mapping like adv2.experiments.demo.BUDGETS['default']",
}
DATA_KEYS = ("name", "n", "seed")
DATASETS = ("shapes",)
DEFAULTS = {"model": "shapes-resnet", "data": {"name": "shapes", "n": 32, "seed": 0}, "batch_size": 32,
            "eps": 0.031, "alpha": 1 / 255, "interpreters": ["grad", "cam", "gradcam", "mask", "rts"],
            "attacks": ["pgd", "adv2", "stadv", "adv2-stadv"], "budgets": "default"}


def load_config(path: str | Path, overrides: list[str] | None = None) -> dict:
    """The config at ``path`` with ``--set KEY=VALUE`` ``overrides`` applied, defaults filled in,
    the budgets expanded and everything validated."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {str(path)!r} not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a config must be a mapping of keys to values, got {type(raw).__name__}")
    return resolve(raw, overrides, source=str(path))


def resolve(raw: dict, overrides: list[str] | None = None, source: str = "config") -> dict:
    """Validate ``raw`` (a config mapping), fill in :data:`DEFAULTS`, expand named budgets and
    apply ``overrides`` (``data.n=4``, ``budgets.cam.steps=100``, ``eps=0.02``; the special
    ``attacks.steps=K`` sets every iteration count of every attack to ``K``, for smoke runs)."""
    from adv2.experiments.demo import BUDGETS, apply_overrides

    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise ValueError(f"{source}: unknown key {unknown[0]!r}; allowed keys: {', '.join(KEYS)}")
    cfg = {**copy.deepcopy(DEFAULTS), **copy.deepcopy(raw)}
    if not isinstance(cfg["data"], dict):
        raise ValueError(f"{source}: data must be {KEYS['data']}, got {cfg['data']!r}")
    cfg["data"] = {**DEFAULTS["data"], **cfg["data"]}
    smoke = []
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        if key.strip() == "attacks.steps":
            smoke.append(_int(yaml.safe_load(value), "attacks.steps", 1))
            continue
        head, _, rest = key.strip().partition(".")
        if head not in KEYS:
            raise ValueError(f"--set {key}: unknown key {head!r}; allowed keys: {', '.join(KEYS)}")
        if head == "budgets" and rest:
            continue  # applied after the budgets are expanded
        if head == "data" and rest:
            cfg["data"][rest] = yaml.safe_load(value)
        elif rest:
            raise ValueError(f"--set {key}: {head} has no sub-keys")
        else:
            cfg[head] = yaml.safe_load(value)
    _check(cfg, source)
    budgets = cfg["budgets"]
    if isinstance(budgets, str):
        if budgets not in BUDGETS:
            raise ValueError(f"{source}: budgets must be {KEYS['budgets']}, got {budgets!r}")
        budgets = copy.deepcopy(BUDGETS[budgets])
    elif not isinstance(budgets, dict):
        raise ValueError(f"{source}: budgets must be {KEYS['budgets']}, got {budgets!r}")
    budgets.pop("n", None)  # the number of images is data.n
    sets = [item.partition("=") for item in overrides or []]
    budgets = apply_overrides(budgets, [f"{k.strip()[len('budgets.'):]}={v}" for k, _, v in sets
                                        if k.strip().startswith("budgets.")])
    for k in smoke:
        _set_iterations(budgets, k)
    cfg["budgets"] = budgets
    return cfg


def _int(v, name: str, lo: int) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        raise ValueError(f"{name} must be an integer ≥ {lo}, got {v!r}")
    return v


def _check(cfg: dict, source: str) -> None:
    from adv2.experiments.demo import ATTACKS, KNOWN

    if cfg["model"] not in models.EMBEDDED:
        raise ValueError(f"{source}: model must be {KEYS['model']} ({', '.join(models.EMBEDDED)}), got "
                         f"{cfg['model']!r}")
    data = cfg["data"]
    unknown = sorted(set(data) - set(DATA_KEYS))
    if unknown:
        raise ValueError(f"{source}: unknown key 'data.{unknown[0]}'; allowed: {', '.join(DATA_KEYS)}")
    if data["name"] not in DATASETS:
        raise ValueError(f"{source}: data.name must be one of {', '.join(DATASETS)}, got {data['name']!r}")
    _int(data["n"], "data.n", 1)
    _int(data["seed"], "data.seed", 0)
    _int(cfg["batch_size"], "batch_size", 1)
    check_eps(cfg["eps"])
    check_positive(cfg["alpha"], "alpha")
    for key, known in (("interpreters", KNOWN), ("attacks", ATTACKS)):
        v = cfg[key]
        if not isinstance(v, list) or not v or len(set(v)) != len(v):
            raise ValueError(f"{source}: {key} must be a non-empty list without repeats ({KEYS[key]}), got {v!r}")
        bad = [x for x in v if x not in known]
        if bad:
            raise ValueError(f"{source}: unknown {key[:-1]} {bad[0]!r} in {key}; allowed: {', '.join(known)}")
    for name in cfg["interpreters"]:
        if name not in interpreters.REGISTRY:  # pragma: no cover - KNOWN is a subset
            raise ValueError(f"{source}: unknown interpreter {name!r}")


def _set_iterations(node, k: int) -> None:
    """Every ``steps`` and ``warmup`` in a budget tree → ``k`` (``attacks.steps=K``)."""
    if isinstance(node, dict):
        for key, v in node.items():
            if key in ("steps", "warmup") and isinstance(v, int):
                node[key] = k
            else:
                _set_iterations(v, k)


def run_config(path: str | Path, out: str | Path | None = None, overrides: list[str] | None = None,
               shard: str | None = None, restart: bool = False, progress: bool = True, verbose: bool = True):
    """``adv2 run``: load and validate the config, then run it with the demo's runner into ``out``
    (default ``runs/CONFIG-NAME``); returns the summary (``None`` for an unfinished shard)."""
    from adv2.experiments.demo import run_demo

    cfg = load_config(path, overrides)
    out = out if out is not None else Path("runs") / Path(path).stem
    return run_demo(model=cfg["model"], n=cfg["data"]["n"], seed=cfg["data"]["seed"], out=out,
                    batch_size=cfg["batch_size"], interpreter_names=tuple(cfg["interpreters"]),
                    attacks=tuple(cfg["attacks"]), eps=cfg["eps"], alpha=cfg["alpha"], budgets=cfg["budgets"],
                    shard=shard, restart=restart, progress=progress, verbose=verbose)
