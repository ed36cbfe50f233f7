"""The run directory: resolved config, environment, per-example rows, tensors, summary."""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from safetensors.torch import load, save

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


def ci95(values: list[float]) -> float | None:
    """Half-width of the normal-approximation 95% confidence interval of the mean of ``values``
    (1.96 · sample standard deviation / √n; ``None`` below two values)."""
    n = len(values)
    if n < 2:
        return None
    m = sum(values) / n
    return 1.96 * (sum((v - m) ** 2 for v in values) / (n - 1)) ** 0.5 / n**0.5


def summarize(examples: list[dict]) -> list[dict]:
    """One row per (attack, interpreter): ``n`` examples, success rate, and the means of
    ``confidence, l1, l2, iou`` (and, where the rows have them, ``flow_mean, flow_loss``) over
    the examples that succeeded (as in the paper); ``KEY_ci95`` is the half-width of each mean's
    95% confidence interval (success rates: over all examples)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for e in examples:
        groups.setdefault((e["attack"], e["interpreter"]), []).append(e)
    rows = []
    for (attack, interp), es in groups.items():
        ok = [e for e in es if e["success"]]
        row = {
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
        }
        for k in FLOW_KEYS:
            if any(e.get(k) is not None for e in es):
                row[k] = _mean([e[k] for e in ok if e.get(k) is not None])
        row["success_rate_ci95"] = ci95([float(bool(e["success"])) for e in es])
        for k in ("confidence", "l1", "l2", "iou", *FLOW_KEYS):
            if k in row:
                row[f"{k}_ci95"] = ci95([e[k] for e in ok if e.get(k) is not None])
        rows.append(row)
    return rows


def write_run(run_dir: str | Path, config: dict | None, env: dict, examples: list[dict], summary: dict,
              tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``config.yaml`` (unless ``config`` is ``None``), ``env.json``, ``examples.csv``,
    ``summary.json`` (and ``tensors.safetensors``), each atomically."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if config is not None:
        atomic_write_bytes(run_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False).encode())
    atomic_write_bytes(run_dir / "env.json", json.dumps(env, indent=2).encode())
    if examples:
        write_csv(run_dir / "examples.csv", examples)
    atomic_write_bytes(run_dir / "summary.json", json.dumps(summary, indent=2).encode())
    if tensors:
        blob = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
        atomic_write_bytes(run_dir / "tensors.safetensors", blob)
    return run_dir


def write_csv(path: Path, rows: list[dict]) -> None:
    """``rows`` (dicts with the keys of the first) as a CSV file, written atomically."""
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())


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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader (or a run killed mid-write) sees the old file or
    the new one, never a part: a temporary file in the same folder, then ``os.replace``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _normal(config: dict) -> dict:
    """``config`` as it reads back from YAML (tuples become lists), for comparisons."""
    return yaml.safe_load(yaml.safe_dump(config, sort_keys=False))


class RunStore:
    """A run directory filled batch by batch, so a run survives being killed and can be split
    into shards. Batch ``k`` is ``batches/batch-k.safetensors`` (its tensors) and
    ``batches/batch-k.json`` (its per-example rows), each written atomically, the JSON last: a
    batch is finished exactly when its JSON exists. ``config.yaml`` is written on the first run;
    a later run into the same directory must have the same configuration (else a ``ValueError``
    names the keys that differ)."""

    def __init__(self, run_dir: str | Path, config: dict):
        self.dir = Path(run_dir)
        self.batch_dir = self.dir / "batches"
        self.batch_dir.mkdir(parents=True, exist_ok=True)
        self.config = _normal(config)
        path = self.dir / "config.yaml"
        if path.exists():
            old = yaml.safe_load(path.read_text())
            if old != self.config:
                keys = sorted(k for k in set(old or {}) | set(self.config) if (old or {}).get(k) != self.config.get(k))
                raise ValueError(f"{self.dir} holds a run made with another configuration (differs in: "
                                 f"{', '.join(keys)}); rerun with the same settings to resume it, discard it "
                                 "(--restart), or choose another output directory")
        else:
            atomic_write_bytes(path, yaml.safe_dump(self.config, sort_keys=False).encode())

    def log(self, message: str) -> None:
        """Append a time-stamped line to ``log.txt`` (one line per event, from any process)."""
        line = f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} pid {os.getpid()} {message}\n"
        with open(self.dir / "log.txt", "a") as f:
            f.write(line)

    def _stem(self, k: int) -> Path:
        return self.batch_dir / f"batch-{k:05d}"

    def done(self, k: int) -> bool:
        return self._stem(k).with_suffix(".json").exists()

    def save(self, k: int, rows: list[dict], tensors: dict[str, torch.Tensor]) -> None:
        stem = self._stem(k)
        blob = save({n: t.detach().cpu().contiguous() for n, t in tensors.items()})
        atomic_write_bytes(stem.with_suffix(".safetensors"), blob)
        atomic_write_bytes(stem.with_suffix(".json"), json.dumps(rows).encode())

    def load(self, n_batches: int) -> tuple[list[dict], dict[str, torch.Tensor]]:
        """All rows and the tensors of batches ``0 … n_batches − 1`` concatenated in batch order."""
        missing = [k for k in range(n_batches) if not self.done(k)]
        if missing:
            raise ValueError(f"{self.dir}: batches {missing[:10]}{' …' if len(missing) > 10 else ''} of {n_batches} "
                             "are not finished yet; run the missing shards (the same command resumes them)")
        rows, parts = [], {}
        for k in range(n_batches):
            stem = self._stem(k)
            rows += json.loads(stem.with_suffix(".json").read_text())
            for name, t in load(stem.with_suffix(".safetensors").read_bytes()).items():
                parts.setdefault(name, []).append(t)
        return rows, {name: torch.cat(ts) for name, ts in parts.items()}


def discard_run(run_dir: str | Path) -> None:
    """Remove a run's stored batches and results from ``run_dir`` (other files stay)."""
    run_dir = Path(run_dir)
    shutil.rmtree(run_dir / "batches", ignore_errors=True)
    for name in ("config.yaml", "env.json", "examples.csv", "summary.json", "tensors.safetensors", "maps.png",
                 "summary.md", "transfer.csv", "report.html", "report.md"):
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / "figures", ignore_errors=True)


def parse_shard(spec: str | None) -> tuple[int, int]:
    """``"i/N"`` (0 ≤ i < N) → ``(i, N)``; ``None`` → ``(0, 1)``."""
    if spec is None:
        return 0, 1
    try:
        i, n = (int(v) for v in str(spec).split("/"))
    except ValueError:
        raise ValueError(f"--shard expects i/N with integers 0 ≤ i < N, got {spec!r}") from None
    if not 0 <= i < n:
        raise ValueError(f"--shard expects i/N with integers 0 ≤ i < N, got {spec!r}")
    return i, n
