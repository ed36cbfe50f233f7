"""Experiment configs (``adv2 run CONFIG.yaml``): loading, ``--set`` overrides, validation.

A config is a YAML mapping; every key is checked before any work, and an unknown key or a bad
value is a ``ValueError`` naming the key and what it accepts. The shipped configs
(:func:`shipped_configs`: ``demo``, ``q1`` … ``q4``, ``transfer-models``, ``imagenet-photos``) live in the package
(``adv2 run q1`` finds them by name) and, in a checkout, under ``configs/``. Every config runs
through :func:`adv2.experiments.runner.run_experiment`, ``adv2 demo`` included.

Keys (defaults in :data:`DEFAULTS`)::

    model: shapes-resnet                 # embedded, efficientnet-lite0, a torchvision name, timm/<arch>,
    #   package.module:function (your own factory), or a mapping:
    #   {name: resnet50, weights: resnet50.pth, num_classes: 1000, mean: [...], std: [...], label: NAME}
    #   {name: timm/convnext_tiny, weights: model.safetensors, num_classes: 1000}   (pip install 'adv2[timm]')
    #   {factory: mypkg.nets:make, kwargs: {width: 32}, weights: net.safetensors, mean: [...], std: [...],
    #    label: NAME}: imports mypkg.nets (the working directory on sys.path) and calls make(**kwargs)
    data: {name: shapes, n: 32, seed: 0, split: test}
    #   or {name: folder, root: DIR, size: 224, labels: sorted | numeric, n: 32, seed: 0}
    #   or {name: photos, size: 224, augment: none | mirror | crops, n: 8, seed: 0}: the photographs
    #   of adv2.data.photos (ImageNet classes, 4/8/16 images); every one is kept and its benign
    #   class is the model's prediction (adv2.data.sources.PhotosData)
    device: cpu                          # cpu | cuda | cuda:K | auto (torchrun: cuda → cuda:LOCAL_RANK)
    batch_size: 32
    eps: 0.031                           # L∞ budget on [0, 1] images, in (0, 1]
    alpha: 0.0039                        # L∞ step
    interpreters: [grad, cam, gradcam, mask, rts]
    attacks: [pgd, adv2, stadv, adv2-stadv]
    target_map: benign                   # benign | other | shape | a map file (.png, .npy)
    transfer: {interpreters: false, models: []}   # measure under other interpreters / models
    budgets: default                     # default | fast | a mapping (adv2.experiments.budgets.BUDGETS)
    defender_seeds: [0, 100]             # MASK (random) is also judged with these jitter seeds; [] for none
    matched_flow: false                  # also StAdv at ADV²-StAdv's flow sizes (attack stadv-matched)
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path

import torchvision
import yaml

from adv2 import interpreters, models
from adv2._validate import check_eps, check_positive
from adv2.data.photos import AUGMENTATIONS, photo_names
from adv2.data.shapes import SPLITS
from adv2.experiments.budgets import ATTACKS, BUDGETS, KNOWN, apply_overrides
from adv2.experiments.runner import run_experiment
from adv2.experiments.sources import model_name, model_spec
from adv2.experiments.targets import check_policy

#: Keys of a config and what they accept.
KEYS = {
    "model": "an embedded model name, efficientnet-lite0, a torchvision architecture, timm/<architecture>, "
             "package.module:function, or {name, weights, num_classes, mean, std, label} or {factory, kwargs, "
             "weights, mean, std, label}",
    "data": "a mapping: name (shapes, folder or photos), n, seed; shapes: split; folder: root, size, labels; "
            "photos: size, augment",
    "device": "cpu, cuda, cuda:K or auto",
    "batch_size": "a positive integer",
    "eps": "the L∞ budget in (0, 1]",
    "alpha": "the L∞ step size, a positive number",
    "interpreters": "a list of interpreter names",
    "attacks": "a list, some of pgd, adv2, stadv, adv2-stadv",
    "target_map": "benign, other, shape, or a map file (.png, .jpg, .npy)",
    "transfer": "a mapping: interpreters (true/false), models (a list of models)",
    "budgets": "default, fast, or a mapping like adv2.experiments.budgets.BUDGETS['default']",
    "defender_seeds": "the jitter seeds a random interpreter (MASK) is judged over: a list of at least two "
                      "distinct integers the attack does not use, or [] for none",
    "matched_flow": "true or false: also run StAdv matched per example to ADV²-StAdv's flow sizes "
                    "(rows of attack stadv-matched; needs stadv and adv2-stadv)",
}
DATA_KEYS = {"shapes": ("name", "n", "seed", "split"), "folder": ("name", "n", "seed", "root", "size", "labels"),
             "photos": ("name", "n", "seed", "size", "augment")}
DATASETS = tuple(DATA_KEYS)
MODEL_KEYS = ("name", "factory", "kwargs", "weights", "num_classes", "mean", "std", "label")
TRANSFER_KEYS = ("interpreters", "models")
DEFAULTS = {"model": "shapes-resnet", "data": {"name": "shapes", "n": 32, "seed": 0}, "device": "cpu",
            "batch_size": 32, "eps": 0.031, "alpha": 1 / 255, "interpreters": ["grad", "cam", "gradcam", "mask", "rts"],
            "attacks": ["pgd", "adv2", "stadv", "adv2-stadv"], "target_map": "benign",
            "transfer": {"interpreters": False, "models": []}, "budgets": "default",
            "defender_seeds": [0, 100], "matched_flow": False}


def packaged_config(name: str) -> Path:
    """The path of the shipped config ``name`` (``demo``, ``q1`` … ``q4``, ``transfer-models``,
    ``imagenet-photos``)."""
    path = Path(str(resources.files("adv2.experiments") / "configs" / f"{name}.yaml"))
    if not path.is_file():
        raise ValueError(f"no shipped config {name!r}; shipped: {', '.join(shipped_configs())}")
    return path


def shipped_configs() -> list[str]:
    """Names of the configs shipped with the package."""
    folder = Path(str(resources.files("adv2.experiments") / "configs"))
    return sorted(p.stem for p in folder.glob("*.yaml"))


def load_config(path: str | Path, overrides: list[str] | None = None) -> dict:
    """The config at ``path`` with ``--set KEY=VALUE`` ``overrides`` applied, defaults filled in,
    the budgets expanded and everything validated."""
    path = Path(path)
    if not path.is_file():
        if path.suffix == "" and str(path) in shipped_configs():
            path = packaged_config(str(path))
        else:
            raise ValueError(f"config file {str(path)!r} not found (shipped configs, usable by name: "
                             f"{', '.join(shipped_configs())})")
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
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise ValueError(f"{source}: unknown key {unknown[0]!r}; allowed keys: {', '.join(KEYS)}")
    cfg = {**copy.deepcopy(DEFAULTS), **copy.deepcopy(raw)}
    _merge_defaults(cfg, source)
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
        if head in ("data", "transfer") and rest:
            _merge_defaults(cfg, source)
            cfg[head][rest] = yaml.safe_load(value)
        elif head == "model" and rest:
            cfg["model"] = model_spec(cfg["model"]) if isinstance(cfg["model"], str) else cfg["model"]
            if rest in ("name", "factory") and isinstance(cfg["model"], dict):  # one replaces the other
                cfg["model"].pop("factory" if rest == "name" else "name", None)
            cfg["model"][rest] = yaml.safe_load(value)
        elif rest:
            raise ValueError(f"--set {key}: {head} has no sub-keys")
        else:
            cfg[head] = yaml.safe_load(value)
    _merge_defaults(cfg, source)
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
    _check_budgets(budgets, source)
    cfg["budgets"] = budgets
    return cfg


def _merge_defaults(cfg: dict, source: str) -> None:
    """Fill the sub-keys of ``data`` and ``transfer`` from :data:`DEFAULTS` (after any override)."""
    for key in ("data", "transfer"):
        if not isinstance(cfg[key], dict):
            raise ValueError(f"{source}: {key} must be {KEYS[key]}, got {cfg[key]!r}")
        cfg[key] = {**DEFAULTS[key], **cfg[key]}


def _check_budgets(budgets: dict, source: str) -> None:
    allowed = ("pgd", "stadv", *KNOWN)
    for key, v in budgets.items():
        if key not in allowed:
            raise ValueError(f"{source}: unknown budget section 'budgets.{key}'; allowed: {', '.join(allowed)}")
        if not isinstance(v, dict):
            raise ValueError(f"{source}: budgets.{key} must be a mapping of settings, got {v!r}")
        for sub in ("interpreter", "flow"):
            if sub in v and not isinstance(v[sub], dict):
                raise ValueError(f"{source}: budgets.{key}.{sub} must be a mapping of settings, got {v[sub]!r}")


def _int(v, name: str, lo: int) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        raise ValueError(f"{name} must be an integer ≥ {lo}, got {v!r}")
    return v


def _check_factory(spec: dict, key: str, source: str) -> None:
    """The keys of ``{factory, kwargs, weights, mean, std, label}`` (the factory is imported when the
    run builds its model, :func:`adv2.models.from_factory`)."""
    if "name" in spec:
        raise ValueError(f"{source}: {key} has both name and factory; give one")
    if not models.is_factory_ref(spec["factory"]):
        raise ValueError(f"{source}: {key}.factory must be 'package.module:function', got {spec['factory']!r}")
    kwargs = spec.get("kwargs")
    if kwargs is not None and (not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs)):
        raise ValueError(f"{source}: {key}.kwargs must be a mapping of keyword arguments, got {kwargs!r}")
    if spec.get("num_classes") is not None:
        raise ValueError(f"{source}: {key}.num_classes does not apply to a factory; pass it in {key}.kwargs")
    if (spec.get("mean") is None) != (spec.get("std") is None):
        raise ValueError(f"{source}: {key}: give both mean and std (the normalisation), or neither")


def _check_model(spec, key: str, source: str):
    if isinstance(spec, str):
        spec = model_spec(spec)
    if not isinstance(spec, dict):
        raise ValueError(f"{source}: {key} must be {KEYS['model']}, got {spec!r}")
    unknown = sorted(set(spec) - set(MODEL_KEYS))
    if unknown:
        raise ValueError(f"{source}: unknown key '{key}.{unknown[0]}'; allowed: {', '.join(MODEL_KEYS)}")
    name = spec.get("name")
    if "factory" in spec:
        _check_factory(spec, key, source)
    elif "kwargs" in spec:
        raise ValueError(f"{source}: {key}.kwargs applies to a factory (package.module:function) only")
    elif isinstance(name, str) and name.startswith(models.TIMM_PREFIX):
        if len(name) == len(models.TIMM_PREFIX):
            raise ValueError(f"{source}: {key}.name {name!r}: write timm/<architecture>, e.g. timm/resnet50")
    elif (name not in models.EMBEDDED and name not in models.IMAGENET
            and name not in torchvision.models.list_models(module=torchvision.models)):
        raise ValueError(f"{source}: {key} must be {KEYS['model']}: an embedded model ({', '.join(models.EMBEDDED)}), "
                         f"{', '.join(models.IMAGENET)}, a torchvision classification architecture such as "
                         f"resnet50, timm/<architecture> or your own factory package.module:function; got {name!r}")
    w = spec.get("weights")
    if w is not None and not Path(str(w)).is_file():
        raise ValueError(f"{source}: {key}.weights: file {str(w)!r} not found")
    if spec.get("num_classes") is not None:
        _int(spec["num_classes"], f"{key}.num_classes", 2)
    for k in ("mean", "std"):
        v = spec.get(k)
        if v is not None and (not isinstance(v, list) or len(v) != 3
                              or not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in v)):
            raise ValueError(f"{source}: {key}.{k} must be a list of 3 numbers, got {v!r}")
    if spec.get("std") is not None and min(spec["std"]) <= 0:
        raise ValueError(f"{source}: {key}.std must be positive, got {spec['std']!r}")


def _check_photos(data: dict, source: str) -> None:
    """``data.size`` and ``data.augment`` of the photos source (augment normalised to its name:
    ``false`` → none, ``true`` → mirror), and ``data.n`` at most the number of photographs."""
    _int(data.setdefault("size", 224), "data.size", 16)
    aug = data.setdefault("augment", "mirror")
    if isinstance(aug, bool) or aug is None:
        aug = "mirror" if aug else "none"
    if not isinstance(aug, str) or aug not in AUGMENTATIONS:
        raise ValueError(f"{source}: data.augment must be one of {', '.join(AUGMENTATIONS)}, got {data['augment']!r}")
    data["augment"] = aug
    total = len(photo_names(aug))
    if data["n"] > total:
        sizes = ", ".join(f"{a} {len(photo_names(a))}" for a in AUGMENTATIONS)
        raise ValueError(f"{source}: data.n: the photos with augment {aug} are {total} images, got n={data['n']} "
                         f"(images per augment: {sizes})")


def _check(cfg: dict, source: str) -> None:
    _check_model(cfg["model"], "model", source)
    data = cfg["data"]
    if data["name"] not in DATASETS:
        raise ValueError(f"{source}: data.name must be one of {', '.join(DATASETS)}, got {data['name']!r}")
    unknown = sorted(set(data) - set(DATA_KEYS[data["name"]]))
    if unknown:
        raise ValueError(f"{source}: unknown key 'data.{unknown[0]}' for data.name {data['name']}; allowed: "
                         f"{', '.join(DATA_KEYS[data['name']])}")
    _int(data["n"], "data.n", 1)
    _int(data["seed"], "data.seed", 0)
    if data["name"] == "shapes":
        if data.get("split", "test") not in SPLITS:
            raise ValueError(f"{source}: data.split must be one of {', '.join(sorted(SPLITS))}, got {data['split']!r}")
    elif data["name"] == "photos":
        _check_photos(data, source)
    else:
        root = data.get("root")
        if not isinstance(root, str) or not root:
            raise ValueError(f"{source}: data.root must name the image folder (root/<class>/<image>)")
        if not Path(root).is_dir():
            raise ValueError(f"{source}: data.root: image folder {root!r} not found")
        _int(data.get("size", 224), "data.size", 16)
        if data.get("labels", "sorted") not in ("sorted", "numeric"):
            raise ValueError(f"{source}: data.labels must be sorted or numeric, got {data['labels']!r}")
    dev = cfg["device"]
    if not isinstance(dev, str) or not (dev in ("cpu", "cuda", "auto") or (dev.startswith("cuda:")
                                                                         and dev[5:].isdigit())):
        raise ValueError(f"{source}: device must be {KEYS['device']}, got {dev!r}")
    _int(cfg["batch_size"], "batch_size", 1)
    ds = cfg["defender_seeds"]
    if not (isinstance(ds, list) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in ds)
            and (not ds or len(set(ds)) == len(ds) >= 2)):
        raise ValueError(f"{source}: defender_seeds must be {KEYS['defender_seeds']}, got {ds!r}")
    if not isinstance(cfg["matched_flow"], bool):
        raise ValueError(f"{source}: matched_flow must be {KEYS['matched_flow']}, got {cfg['matched_flow']!r}")
    if cfg["matched_flow"] and not {"stadv", "adv2-stadv"} <= set(cfg["attacks"] or ()):
        raise ValueError(f"{source}: matched_flow compares adv2-stadv with StAdv at its flow sizes: attacks must "
                         f"hold stadv and adv2-stadv, got {cfg['attacks']!r}")
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
    if data["name"] == "photos" and cfg["target_map"] == "other":
        raise ValueError(f"{source}: target_map other needs other images of each target class, which the "
                         "photographs do not have; use benign, shape or a map file")
    try:
        check_policy(cfg["target_map"])
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None
    tr = cfg["transfer"]
    unknown = sorted(set(tr) - set(TRANSFER_KEYS))
    if unknown:
        raise ValueError(f"{source}: unknown key 'transfer.{unknown[0]}'; allowed: {', '.join(TRANSFER_KEYS)}")
    if not isinstance(tr["interpreters"], bool):
        raise ValueError(f"{source}: transfer.interpreters must be true or false, got {tr['interpreters']!r}")
    if not isinstance(tr["models"], list):
        raise ValueError(f"{source}: transfer.models must be a list of models, got {tr['models']!r}")
    seen = {model_name(cfg["model"])}
    for i, spec in enumerate(tr["models"]):
        _check_model(spec, f"transfer.models[{i}]", source)
        label = model_name(spec)
        if label in seen:
            raise ValueError(f"{source}: transfer.models[{i}] is named {label!r} like the source model or another "
                             "transfer model; give it a distinct label (model: {name, weights, label})")
        seen.add(label)


def _set_iterations(node, k: int) -> None:
    """Every ``steps`` and ``warmup`` in a budget tree → ``k`` (``attacks.steps=K``)."""
    if isinstance(node, dict):
        for key, v in node.items():
            if key in ("steps", "warmup") and isinstance(v, int):
                node[key] = k
            else:
                _set_iterations(v, k)


def run_config(path: str | Path, out: str | Path | None = None, overrides: list[str] | None = None,
               shard: str | None = None, restart: bool = False, progress: bool = True, verbose: bool = True,
               *, model=None, label: str | None = None):
    """``adv2 run``: load and validate the config (a file, or a shipped config by name), then run
    it into ``out`` (default ``runs/CONFIG-NAME``); returns the summary (``None`` for an
    unfinished shard). ``model`` / ``label``: your own classifier object instead of the config's
    model (see :func:`adv2.experiments.runner.run_experiment`): ``run_config("q1", out, model=net,
    label="mynet", overrides=["data.n=4"])``."""
    cfg = load_config(path, overrides)
    out = out if out is not None else Path("runs") / Path(path).stem
    return run_experiment(cfg, out, shard=shard, restart=restart, progress=progress, verbose=verbose, model=model,
                          label=label)
