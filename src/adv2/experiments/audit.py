"""``adv2 audit``: how easily can a model's explanations be manipulated? Worst case against average case.

For each interpreter and each ε, on correctly classified images (on the photographs: all of them):

- ``adv2``: ADV² reaches a random target class while keeping the benign map (L1 to the benign map);
- ``manipulate``: keeps the prediction and moves the map to the map of another image (image
  ``i`` gets the benign map of image ``i−1`` of the audit, image 0 that of the last one;
  Dombrowski et al.'s setting; L1 to that target, ``l1_start`` is the benign map's L1 to it);
- ``fragility``: keeps the prediction and pushes the map away from the benign one (L1 to it),
  with ``measure="l1"`` by default: the worst case for the distance the audit reports
  (Ghorbani et al.'s ``topk`` and ``center_of_mass`` with ``--measure``);
- ``random_l1``: what random noise of the same ε does to the map (uniform in the ε-ball, the
  worst of ``samples`` draws per image, as Captum's ``sensitivity_max`` and Quantus'
  ``MaxSensitivity`` measure it), beside every row;
- ``unrelated_l1``: the scale at which a map says nothing about its image, the mean L1 between
  the benign maps of two different images (image ``i`` and image ``i−1``), beside every row
  (with one image: ``None``). A random L1 near it means noise alone already scrambles the map.

The model: an embedded name, ``efficientnet-lite0``, a torchvision or ``timm/<architecture>`` name
with ``weights``, your own factory ``package.module:function`` (``weights``: its state dict), or,
from Python, the model object itself (``run_audit(net, label="mynet")``, run in eval mode, its modes
restored afterwards). ``audit.json`` records the model's identity (label, class, SHA-256 of its
weights).

The images: ``data=None`` takes the embedded shapes benchmark for an embedded model and the
photographs of :func:`adv2.data.photos` (``data="photos"``, with ``augment``) for any other (an
ImageNet classifier such as ``efficientnet-lite0``); a folder path takes an ImageNet-style folder.
The photographs are all kept, whatever the model says, and each image's class is the model's
prediction (:class:`adv2.data.sources.PhotosData`); elsewhere only correctly classified
images are kept.

Writes ``OUT/audit.json`` (``rows`` with ``interpreter, objective, eps, success_rate, l1,
random_l1, unrelated_l1, n`` …) and ``OUT/audit.png`` (map distance against ε per interpreter).
"""

from __future__ import annotations

import json
import time
from fractions import Fraction
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from adv2 import interpreters, metrics
from adv2._io import atomic_write_bytes
from adv2.attacks.presets import PRESETS, preset
from adv2.data.photos import AUGMENTATIONS
from adv2.data.selection import select_examples, target_classes
from adv2.data.sources import FolderData, PhotosData, ShapesData
from adv2.experiments.runner import resolve_device
from adv2.experiments.sources import model_for_run, model_spec, user_model_in_eval_mode
from adv2.experiments.sources import model_name as label_of
from adv2.experiments.store import env_info
from adv2.interpreters.cam import GradCAM
from adv2.models import EMBEDDED
from adv2.report.figures import audit_figure
from adv2.report.tables import format_table

DEFAULT_EPS = (1 / 255, 2 / 255, 4 / 255, 8 / 255)
#: Captum methods ``adv2 audit --interpreter`` knows by name (captum must be installed).
CAPTUM_NAMES = ("captum-saliency", "captum-inputxgradient", "captum-integratedgradients", "captum-layergradcam",
                "captum-smoothgrad")


def parse_eps(text: str) -> tuple[float, ...]:
    """``"1/255,2/255,0.03"`` → floats, each in (0, 1]."""
    out = []
    for part in str(text).split(","):
        try:
            v = float(Fraction(part.strip()))
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"--eps expects comma-separated numbers or fractions like 4/255, got {part!r}") from None
        if not 0 < v <= 1:
            raise ValueError(f"each eps must be in (0, 1], got {part.strip()}")
        out.append(v)
    if not out:
        raise ValueError("--eps needs at least one value")
    return tuple(out)


def build_interpreter(name: str, model):
    """An adv2 interpreter by name, or a wrapped Captum method (``captum-saliency``, ...)."""
    if not name.startswith("captum-"):
        return interpreters.get(name, model)
    if name not in CAPTUM_NAMES:
        raise ValueError(f"unknown captum method {name!r}; known: {', '.join(CAPTUM_NAMES)}")
    try:
        import captum.attr as ca
    except ImportError:
        raise ValueError(f"{name} needs captum: pip install 'adv2[captum]'") from None
    if name == "captum-saliency":
        return interpreters.from_captum(ca.Saliency(model))
    if name == "captum-inputxgradient":
        return interpreters.from_captum(ca.InputXGradient(model))
    if name == "captum-integratedgradients":
        return interpreters.from_captum(ca.IntegratedGradients(model), n_steps=8)
    if name == "captum-smoothgrad":
        return interpreters.from_captum(ca.NoiseTunnel(ca.Saliency(model)), nt_type="smoothgrad", nt_samples=4,
                                        stdevs=0.05)
    return interpreters.from_captum(ca.LayerGradCam(model, GradCAM(model).site.layer))


@torch.no_grad()
def random_l1(g, x, y, benign, eps: float, samples: int, seed: int) -> torch.Tensor:
    """Per example, the largest L1 of ``g(x + u) `` to ``benign`` over ``samples`` draws of ``u``
    uniform in the ε-ball (images clipped to [0, 1]); seeded, the same draws on any device."""
    gen = torch.Generator().manual_seed(seed)
    worst = torch.zeros(x.shape[0], device=x.device)
    for _ in range(samples):
        u = ((torch.rand(x.shape, generator=gen) * 2 - 1) * eps).to(x.device)
        with torch.enable_grad():
            m = g((x + u).clamp(0, 1), y)
        worst = torch.maximum(worst, metrics.lp_distance(m.detach(), benign))
    return worst


@user_model_in_eval_mode
def run_audit(model_name: str | nn.Module = "shapes-resnet", interpreter_names=("grad", "cam"), eps=DEFAULT_EPS,
              objectives=PRESETS, data: str | None = None, size: int = 224, n: int = 12, steps: int = 80,
              samples: int = 8, seed: int = 0, out: str | Path = "runs/audit", weights: str | None = None,
              num_classes: int | None = None, measure: str = "l1", labels: str = "sorted", augment: str = "mirror",
              progress: bool = True, verbose: bool = True, *, model: nn.Module | None = None,
              label: str | None = None, device: str = "cpu") -> dict:
    """Run the audit (see the module docstring) and write ``out/audit.json`` and ``out/audit.png``;
    return the JSON dict. ``steps`` iterations per attack (ADV² also 1/2 of that of PGD warm-up).

    ``model_name``: a model name or ``package.module:function`` (with ``weights``,
    ``num_classes``), or an ``nn.Module`` (as ``model=``); ``model``: your own classifier object
    taking ``[0, 1]`` images; ``label`` names the model in ``audit.json`` and the figure.

    ``data``: ``None`` (shapes for an embedded model, else the photographs), ``"shapes"``,
    ``"photos"`` (``augment``: none, mirror or crops: 4, 8 or 16 images; ``n`` is capped at that)
    or an image folder ``root/<class>/<image>`` (``size``, ``labels``). ``device``: where a model
    named by ``model_name`` runs (``cpu``, ``cuda``, ``cuda:K`` or ``auto``); a model object runs on
    its own device."""
    if isinstance(model_name, nn.Module):
        if model is not None:
            raise ValueError("run_audit: pass the model once (as the first argument or as model=)")
        model, model_name = model_name, None
    for o in objectives:
        if o not in PRESETS:
            raise ValueError(f"unknown objective {o!r}; expected some of {', '.join(PRESETS)}")
    if "manipulate" in objectives and n < 2:
        raise ValueError("the manipulate objective needs n ≥ 2 (each image's target is another image's map)")
    for k, v, lo in (("n", n, 1), ("steps", steps, 1), ("samples", samples, 1)):
        if not isinstance(v, int) or isinstance(v, bool) or v < lo:
            raise ValueError(f"{k} must be an integer ≥ {lo}, got {v!r}")
    eps = tuple(eps)
    if labels not in ("sorted", "numeric"):
        raise ValueError(f"labels must be sorted or numeric, got {labels!r}")
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {', '.join(AUGMENTATIONS)}, got {augment!r}")
    if data is None:
        data = "shapes" if model is None and model_name in EMBEDDED else "photos"
    spec = None if model is not None else model_spec(model_name, weights, num_classes)
    device = resolve_device(device) if model is None else "cpu"  # a model object stays on its own device
    net, spec, device, identity = model_for_run(spec, model, label, device, size=64 if data == "shapes" else size)
    model_name = label_of(spec)
    interps = {name: build_interpreter(name, net) for name in interpreter_names}
    if data == "shapes":
        dataset = ShapesData("test", seed)
    elif data == "photos":
        dataset = PhotosData(size, augment)
    else:
        dataset = FolderData(data, size, labels)
    x, y, _, idx, _ = select_examples(net, dataset, n, seed, device)
    x = x.to(device)
    if "manipulate" in objectives and len(idx) < 2:
        raise ValueError(f"the manipulate objective needs at least 2 images (each image's target is another image's "
                         f"map); the data gave {len(idx)}" + ("" if dataset.selection == "all" else
                                                              " the model classifies correctly"))
    for g in interps.values():
        g.validate(x)
    num = int(net(x[:1]).shape[1])
    ct = target_classes(y, idx, seed, num).to(device)
    y = y.to(device)
    rows, t_start = [], time.time()
    bar = tqdm(total=len(interps) * len(eps) * len(objectives), desc="audit", disable=not progress)
    for name, g in interps.items():
        benign = g(x, y).detach()
        other = benign.roll(1, 0)  # image i's target: the benign map of image i−1 (0: the last image's)
        unrelated = float(metrics.lp_distance(benign, other).mean()) if len(benign) > 1 else None
        for e in eps:
            rnd = random_l1(g, x, y, benign, e, samples, seed)
            for obj in objectives:
                t0 = time.time()
                kw = {"eps": e, "alpha": min(1 / 255, e / 4), "steps": steps}
                if obj == "adv2":
                    atk = preset(obj, net, g, warmup=steps // 2, **kw)
                    res = atk(x, ct, target_map=benign)
                    ref = benign
                elif obj == "manipulate":
                    res = preset(obj, net, g, **kw)(x, other)
                    ref = other
                else:
                    res = preset(obj, net, g, measure=measure, **kw)(x)
                    ref = benign
                l1 = metrics.lp_distance(res.map, ref)
                ok = res.success

                def mean(v, ok=ok):
                    return float(v[ok].mean()) if ok.any() else None

                row = {"interpreter": name, "objective": obj, "eps": e, "n": len(idx),
                       "success_rate": float(ok.float().mean()), "l1": mean(l1),
                       "random_l1": float(rnd.mean()), "unrelated_l1": unrelated,
                       "seconds": round(time.time() - t0, 1)}
                if obj == "manipulate":
                    row["l1_start"] = unrelated  # the benign map's L1 to its target, another image's map
                if obj == "fragility":
                    row["topk_intersection"] = mean(metrics.topk_intersection(benign, res.map))
                    row["spearman"] = mean(metrics.spearman(benign, res.map))
                row["ratio_to_random"] = (row["l1"] / row["random_l1"]
                                          if obj == "fragility" and row["l1"] is not None and row["random_l1"] > 0
                                          else None)
                rows.append(row)
                bar.update()
    bar.close()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"model": model_name, "model_identity": identity, "data": data, "n": len(idx), "indices": idx,
              "seed": seed, "steps": steps, "measure": measure, "samples": samples, "rows": rows,
              "seconds": round(time.time() - t_start, 1),
              "env": env_info(seed, device)}
    atomic_write_bytes(out / "audit.json", json.dumps(result, indent=2).encode())
    plot_audit(rows, out / "audit.png", title=f"{model_name}: map distance under attack vs random noise")
    if verbose:
        keys = ("interpreter", "objective", "eps", "success_rate", "l1", "random_l1", "ratio_to_random", "l1_start",
                "unrelated_l1")
        print(format_table(rows, keys))
        print(f"written: {out / 'audit.json'}, {out / 'audit.png'}  ({result['seconds']:.0f} s)")
    return result


def plot_audit(rows: list[dict], path: Path, title: str = "") -> Path:
    """One panel per interpreter: L1 against ε for each objective, and random noise's
    (:func:`adv2.report.figures.audit_figure`)."""
    return audit_figure(rows, path, title=title)
