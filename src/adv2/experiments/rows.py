"""Per-example rows of a run (``examples.csv``, ``transfer.csv``): one per example × attack ×
interpreter, and one per transfer measurement."""

from __future__ import annotations

import torch

from adv2 import metrics
from adv2.attacks.flow import flow_loss
from adv2.attacks.stadv import mean_flow

#: Columns of a transfer row (``transfer.csv``) and of its summary (``summary.json["transfer"]``).
TRANSFER_KEYS = ("attack", "interpreter", "model", "measured_by", "n", "success_rate", "l1", "l2", "iou")


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
        f_mean, f_loss = mean_flow(flow), flow_loss(flow)
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


def distances(m: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per example: L1, L2 and IoU-test between maps ``m`` and ``ref``."""
    return metrics.lp_distance(m, ref, p=1), metrics.lp_distance(m, ref, p=2), metrics.iou_test(m, ref)


def transfer_rows(attack, made_against, model, measured_by, success, m, ref, ids) -> list[dict]:
    """Rows of one transfer measurement: the attack ``attack`` made against interpreter
    ``made_against`` (on the source model), measured on ``model`` by ``measured_by``."""
    l1, l2, iou = distances(m, ref)
    return [{"index": int(i), "attack": attack, "interpreter": made_against, "model": model,
             "measured_by": measured_by, "success": bool(success[j]), "l1": float(l1[j]), "l2": float(l2[j]),
             "iou": float(iou[j])} for j, i in enumerate(ids)]


def with_true_label(row: dict, label: int) -> dict:
    """``row`` with ``true_label`` (the data's own label) right after ``label`` (the benign class)."""
    out = {}
    for k, v in row.items():
        out[k] = v
        if k == "label":
            out["true_label"] = int(label)
    return out
