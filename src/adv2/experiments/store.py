"""The run directory: resolved config, environment, per-example rows, tensors, summary."""

from __future__ import annotations

import csv
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file

SUMMARY_KEYS = ("attack", "interpreter", "n", "success_rate", "confidence", "l1", "l2", "iou")
#: Summary columns of the flow attacks (StAdv, ADV²-StAdv): mean |Δu|, |Δv| in pixels and ℓ_flow.
FLOW_KEYS = ("flow_mean", "flow_loss")


def git_sha() -> str | None:
    """The source tree's git commit, if it is a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
            text=True, timeout=5, check=True,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def env_info(seed: int, device: str | torch.device) -> dict:
    import torchvision

    import adv2

    return {
        "adv2": adv2.__version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "platform": platform.platform(),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "seed": seed,
        "git_sha": git_sha(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _mean(values: list[float]) -> float | None:
    return float(sum(values) / len(values)) if values else None


def summarize(examples: list[dict]) -> list[dict]:
    """One row per (attack, interpreter): ``n`` examples, success rate, and the means of
    ``confidence, l1, l2, iou`` (and, where the rows have them, ``flow_mean, flow_loss``) over
    the examples that succeeded (as in the paper)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for e in examples:
        groups.setdefault((e["attack"], e["interpreter"]), []).append(e)
    rows = []
    for (attack, interp), es in groups.items():
        ok = [e for e in es if e["success"]]
        rows.append({
            "attack": attack,
            "interpreter": interp,
            "n": len(es),
            "success_rate": sum(bool(e["success"]) for e in es) / len(es),
            "success_rate_quantized": sum(bool(e["success_quantized"]) for e in es) / len(es),
            "confidence": _mean([e["confidence"] for e in ok]),
            "l1": _mean([e["l1"] for e in ok]),
            "l2": _mean([e["l2"] for e in ok]),
            "iou": _mean([e["iou"] for e in ok]),
            "seconds": _mean([e.get("seconds", 0.0) for e in es]),
        })
        for k in FLOW_KEYS:
            if any(e.get(k) is not None for e in es):
                rows[-1][k] = _mean([e[k] for e in ok if e.get(k) is not None])
    return rows


def write_run(run_dir: str | Path, config: dict, env: dict, examples: list[dict], summary: dict,
              tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``config.yaml, env.json, examples.csv, summary.json`` (and ``tensors.safetensors``)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (run_dir / "env.json").write_text(json.dumps(env, indent=2))
    if examples:
        fields = list(examples[0])
        with open(run_dir / "examples.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(examples)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if tensors:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(run_dir / "tensors.safetensors"))
    return run_dir


def format_table(rows: list[dict], keys=SUMMARY_KEYS) -> str:
    """A fixed-width text table of summary rows."""
    def fmt(v):
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.3f}"
        return str(v)

    cells = [[k for k in keys]] + [[fmt(r.get(k)) for k in keys] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(keys))]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(keys))) for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: list[dict], keys=SUMMARY_KEYS) -> str:
    def fmt(v):
        return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))

    out = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    out += ["| " + " | ".join(fmt(r.get(k)) for k in keys) + " |" for r in rows]
    return "\n".join(out)
