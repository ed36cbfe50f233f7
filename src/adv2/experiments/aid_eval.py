"""``adv2 eval-aid``: the AID defense (:func:`adv2.defenses.aid`) evaluated *adaptively*.

ADV² is re-run against the AID-trained interpreter itself (the attacker knows the defense), next
to the plain RTS, on correctly classified test images of an embedded model.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from adv2 import metrics
from adv2._io import atomic_write_bytes
from adv2._validate import num_classes_of
from adv2.attacks import ADV2, PGD
from adv2.data.selection import correctly_classified_shapes, target_classes
from adv2.interpreters.rts import RTS
from adv2.models import EMBEDDED
from adv2.models import load as load_model

#: ADV² budget of :func:`eval_aid` (the demo's RTS budget) and the larger adaptive one.
EVAL_BUDGET = dict(warmup=50, steps=300)


def evaluate_interpreter(model, g, x, y, masks, ct, x_pgd, budget: dict, eps: float) -> dict:
    """Pointing game of ``g`` and ADV² (adaptive: against ``g`` itself) vs PGD on ``x``."""
    with torch.no_grad():
        benign = g(x, y)
        pgd_map = g(x_pgd, ct)
        pgd_ok = model(x_pgd).argmax(1) == ct
    res = ADV2(model, g, eps=eps, **budget)(x, ct, target_map=benign)
    ok = res.success

    def mean(v, sel):
        return float(v[sel].mean()) if sel.any() else float("nan")

    return {
        "pointing_game": float(metrics.pointing_game(benign, masks).float().mean()),
        "adv2_success": float(ok.float().mean()),
        "adv2_l1": mean(metrics.lp_distance(res.map, benign, p=1), ok),
        "adv2_iou": mean(metrics.iou_test(res.map, benign), ok),
        "pgd_l1": mean(metrics.lp_distance(pgd_map, benign, p=1), pgd_ok),
    }


def eval_aid(name: str = "shapes-resnet", out: str | Path | None = None, n: int = 64, seed: int = 0,
             eps: float = 0.031, budget: dict | None = None, large_factor: int = 3, progress: bool = True) -> dict:
    """RTS vs RTS+AID on ``n`` correctly classified test images of embedded model ``name``.

    For each interpreter: benign pointing game, ADV² success / L1 / IoU to its own benign map
    (ADV² re-run against that interpreter: the attacker knows the defense) and PGD's L1. For
    ``rts-aid`` also the same attack with ``large_factor`` × the iterations (``*_large`` keys):
    whether a stronger adaptive attacker closes the gap again. Writes ``out/aid.json``
    (``{"rts": {...}, "rts-aid": {...}}``) and ``out/config.json`` if ``out`` is given; returns
    the two results and ``"config"`` in one dict.
    """
    if name not in EMBEDDED:
        raise ValueError(f"eval-aid compares the shipped RTS networks of an embedded model ({', '.join(EMBEDDED)}); "
                         f"for your own classifier call adv2.experiments.aid_eval.evaluate_interpreter from Python")
    for key, v in (("n", n), ("large_factor", large_factor)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{key} must be a positive integer, got {v!r}")
    budget = {**EVAL_BUDGET, **(budget or {})}
    model = load_model(name)
    x, y, masks, idx = correctly_classified_shapes(model, n, seed=seed)
    ct = target_classes(y, idx, seed, num_classes_of(model))
    x_pgd = PGD(model, eps=eps, steps=100)(x, ct).x_adv
    result = {}
    for key, g in (("rts", RTS.load(name, model=model)), ("rts-aid", RTS.load(name, model=model, aid=True))):
        t0 = time.time()
        result[key] = evaluate_interpreter(model, g, x, y, masks, ct, x_pgd, budget, eps)
        if key == "rts-aid" and large_factor > 1:
            big = {**budget, "steps": budget["steps"] * large_factor}
            r = evaluate_interpreter(model, g, x, y, masks, ct, x_pgd, big, eps)
            result[key].update({f"{k}_large": v for k, v in r.items() if k.startswith("adv2")})
        result[key]["seconds"] = round(time.time() - t0, 1)
        if progress:
            print(f"{key}: done in {result[key]['seconds']:.0f} s", flush=True)
    result["config"] = {"model": name, "n": n, "seed": seed, "eps": eps, "budget": budget,
                        "large_factor": large_factor}
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / "aid.json", json.dumps({k: result[k] for k in ("rts", "rts-aid")}, indent=2).encode())
        atomic_write_bytes(out / "config.json", json.dumps(result["config"], indent=2).encode())
    return result


def format_aid(result: dict) -> str:
    """The side-by-side table of :func:`eval_aid`'s result."""
    keys = ("pointing_game", "adv2_success", "adv2_l1", "adv2_iou", "pgd_l1")
    lines = ["| interpreter | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name in ("rts", "rts-aid"):
        r = result[name]
        lines.append(f"| {name} | " + " | ".join(f"{r[k]:.4f}" if "l1" in k else f"{r[k]:.3f}" for k in keys) + " |")
    r = result["rts-aid"]
    if "adv2_l1_large" in r:
        f = result["config"]["large_factor"]
        lines.append(f"| rts-aid, ADV² {f}× iterations | {r['pointing_game']:.3f} | {r['adv2_success_large']:.3f} | "
                     f"{r['adv2_l1_large']:.4f} | {r['adv2_iou_large']:.3f} | {r['pgd_l1']:.4f} |")
    ratio = result["rts-aid"]["adv2_l1"] / max(result["rts"]["adv2_l1"], 1e-12)
    lines.append(f"\nADV² L1 against RTS+AID / against RTS: {ratio:.2f}×; pointing game change "
                 f"{100 * (result['rts-aid']['pointing_game'] - result['rts']['pointing_game']):+.1f} points")
    return "\n".join(lines)
