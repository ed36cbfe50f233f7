"""RTS as an interpreter: benign pointing game and object coverage of the shipped networks.

Bars: benign pointing game ≥ 85% on the embedded test images; the maps cover the
object; the AID-trained network's pointing game at most 5 points below the plain one's.
Also: the mask's mass inside the object, the mask area for a class the image does not show
(the class selector), training time and file size.

    python benchmarks/rts.py [--n 500]
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

import adv2
from adv2.experiments.sampling import correctly_classified_shapes
from adv2.interpreters.rts import shipped_path


def stats(g, x, y, masks) -> dict:
    with torch.no_grad():
        m = torch.cat([g(x[i : i + 100], y[i : i + 100]) for i in range(0, len(x), 100)])
        absent = torch.cat([g(x[i : i + 100], (y[i : i + 100] + 3) % 10) for i in range(0, len(x), 100)])
    inside = (F.adaptive_avg_pool2d(masks, m.shape[-2:]) > 0.5).float()
    return {
        "pointing": adv2.metrics.pointing_game(m, masks).float().mean().item(),
        "cover": (((m > 0.5).float() * inside).flatten(1).sum(1) / inside.flatten(1).sum(1).clamp_min(1)).mean().item(),
        "inside": ((m * inside).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1e-6)).mean().item(),
        "area": m.mean().item(),
        "absent": absent.mean().item(),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=500)
    args = ap.parse_args()
    print(f"| model | network | pointing (n={args.n}; ≥ 0.85) | object covered (mask > 0.5) | mask mass inside object "
          "| mask area | area, absent class | train s | MB |")
    print("|" + "---|" * 9)
    for name in adv2.models.EMBEDDED:
        model = adv2.models.load(name)
        x, y, masks, _ = correctly_classified_shapes(model, args.n, seed=0)
        base = None
        for aid in (False, True):
            g = adv2.interpreters.RTS.load(name, model=model, aid=aid)
            s = stats(g, x, y, masks)
            path = shipped_path(name, aid)
            rec = json.loads(path.with_suffix(".json").read_text())
            label = "rts-aid" if aid else "rts"
            point = f"{s['pointing']:.3f}"
            if base is not None:
                point += f" ({100 * (s['pointing'] - base):+.1f} points; ≥ −5)"
            base = s["pointing"] if base is None else base
            print(f"| {name} | {label} | {point} | {s['cover']:.3f} | {s['inside']:.3f} | {s['area']:.3f} "
                  f"| {s['absent']:.3f} | {rec['train_seconds']:.0f} | {path.stat().st_size / 2**20:.2f} |")


if __name__ == "__main__":
    main()
