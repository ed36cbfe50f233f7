"""The run directory: resolved config, environment, per-example rows, tensors, summary."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
import torchvision
import yaml

from adv2._io import (
    DamagedFileError,
    atomic_write_bytes,
    json_problem,
    read_safetensors,
    read_safetensors_with_metadata,
    safetensors_problem,
    write_csv,
    write_safetensors,
)
from adv2._version import __version__
from adv2.experiments.budgets import BASELINES, MATCHED
from adv2.metrics import judged_ratio
from adv2.models.factory import identity_mismatch
from adv2.report.tables import format_table, markdown_table

__all__ = ["FLOW_KEYS", "JUDGE_KEYS", "MATCHED_KEYS", "SUMMARY_KEYS", "DamagedFileError", "RunStore",
           "atomic_write_bytes", "ci95",
           "discard_run", "env_info", "format_table", "git_sha", "markdown_table", "parse_shard", "summarize",
           "write_csv", "write_run"]

SUMMARY_KEYS = ("attack", "interpreter", "n", "success_rate", "confidence", "l1", "l2", "iou")
#: Summary columns of the flow attacks (StAdv, ADV²-StAdv): mean |Δu|, |Δv| in pixels and ℓ_flow.
FLOW_KEYS = ("flow_mean", "flow_loss")
#: Summary columns of a random interpreter (MASK) judged over the defender seeds: the mean L1 to
#: the benign map under the defender seeds, MASK's own floor, and (ADV² rows) the judged figure.
JUDGE_KEYS = ("l1_defender", "noise_floor", "judged_ratio")
#: Summary columns of ADV²-StAdv against StAdv at its flow sizes (a run's ``matched_flow``): its L1 over
#: the matched StAdv's, over the images both succeeded on, and for a random interpreter (MASK) the
#: judged figure against the matched StAdv, ``(ADV²-StAdv − floor) / (matched − floor)``.
MATCHED_KEYS = ("matched_ratio", "matched_judged_ratio")
#: The metadata key of a cell file's record (:meth:`RunStore.save_cell`).
CELL_KEY = "adv2.cell"


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
    return {
        "adv2": __version__,
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
        for k in (*FLOW_KEYS, *JUDGE_KEYS[:2]):
            if any(e.get(k) not in (None, "") for e in es):
                row[k] = _mean([e[k] for e in ok if e.get(k) not in (None, "")])
        row["success_rate_ci95"] = ci95([float(bool(e["success"])) for e in es])
        for k in ("confidence", "l1", "l2", "iou", *FLOW_KEYS):
            if k in row:
                row[f"{k}_ci95"] = ci95([e[k] for e in ok if e.get(k) is not None])
        rows.append(row)
    _add_judged(rows, groups)
    _add_matched(rows, groups)
    return rows


def _add_matched(rows: list[dict], groups: dict) -> None:
    """``matched_ratio`` on each ADV²-StAdv row of a run with ``matched_flow``: its mean L1 over the
    mean L1 of StAdv at the same flow sizes, over the images both succeeded on; where both rows
    were judged over the defender seeds (MASK), ``matched_judged_ratio`` over the same images."""
    for row in rows:
        key = (MATCHED, row["interpreter"])
        if row["attack"] != "adv2-stadv" or key not in groups:
            continue
        ok = {e["index"]: e for e in groups[key] if e["success"]}
        pairs = [(e, ok[e["index"]]) for e in groups[("adv2-stadv", row["interpreter"])]
                 if e["success"] and e["index"] in ok]
        base = sum(float(m["l1"]) for _, m in pairs)
        row["matched_ratio"] = sum(float(a["l1"]) for a, _ in pairs) / base if pairs and base > 0 else None
        judged = [(a, m) for a, m in pairs if a.get("l1_defender") not in (None, "")
                  and m.get("l1_defender") not in (None, "")]
        if judged:  # a random interpreter: as a defender sees it, against the matched StAdv
            adv, base_l1, floor = (torch.tensor([float(p[which][k]) for p in judged])
                                   for k, which in (("l1_defender", 0), ("l1_defender", 1), ("noise_floor", 0)))
            value = judged_ratio(adv, base_l1, floor)
            row["matched_judged_ratio"] = None if value != value else value


def _add_judged(rows: list[dict], groups: dict) -> None:
    """``judged_ratio`` on each ADV² row judged over the defender seeds: ``(ADV² − floor) / (baseline −
    floor)`` over the examples both succeeded on (:func:`adv2.metrics.judged_ratio`)."""
    for row in rows:
        base = BASELINES.get(row["attack"])
        key = (base, row["interpreter"])
        if base is None or key not in groups or "l1_defender" not in row:
            continue
        by_index = {e["index"]: e for e in groups[key]}
        pairs = [(e, by_index[e["index"]]) for e in groups[(row["attack"], row["interpreter"])]
                 if e["index"] in by_index and e.get("l1_defender") not in (None, "")
                 and by_index[e["index"]].get("l1_defender") not in (None, "")]
        if not pairs:
            continue

        adv, base_l1, floor = (torch.tensor([float(p[which][k]) for p in pairs])
                               for k, which in (("l1_defender", 0), ("l1_defender", 1), ("noise_floor", 0)))
        ok = [torch.tensor([bool(p[which]["success"]) for p in pairs]) for which in (0, 1)]
        value = judged_ratio(adv, base_l1, floor, ok[0], ok[1])
        row["judged_ratio"] = None if value != value else value  # nan (nothing to judge) is stored as null


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
        write_safetensors(run_dir / "tensors.safetensors", tensors)
    return run_dir


def _normal(config: dict) -> dict:
    """``config`` as it reads back from YAML (tuples become lists), for comparisons."""
    return yaml.safe_load(yaml.safe_dump(config, sort_keys=False))


class RunStore:
    """A run directory filled batch by batch, so a run survives being killed and can be split
    into shards. Batch ``k`` is ``batches/batch-k.safetensors`` (its tensors) and
    ``batches/batch-k.json`` (its per-example rows), each written atomically, the JSON last: a
    batch is finished exactly when its JSON exists. Until then its finished cells (one attack ×
    interpreter each) are ``batches/batch-k-cell-*.safetensors`` (:meth:`cell_path`), so a killed
    run loses at most the cell that was running. ``config.yaml`` is written on the first run;
    a later run into the same directory must have the same configuration (else a ``ValueError``
    names the keys that differ).

    ``identity`` (:func:`adv2.models.model_identity`: label, class, SHA-256 of the weights) is
    written to ``model.json`` on the first run; a later run with another model or other weights is
    refused with a ``ValueError`` saying which differs, before anything is written."""

    def __init__(self, run_dir: str | Path, config: dict, identity: dict | None = None):
        self.dir = Path(run_dir)
        self.batch_dir = self.dir / "batches"
        self.config = _normal(config)
        path, ident_path = self.dir / "config.yaml", self.dir / "model.json"
        if identity is not None and ident_path.exists():
            try:
                old_identity = json.loads(ident_path.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise ValueError(f"{ident_path} does not read back ({e}); discard the run (--restart) or choose "
                                 "another output directory") from None
            diff = identity_mismatch(old_identity, identity)
            if diff:
                raise ValueError(f"{self.dir} holds a run made with another model: {diff}; resume with the same model "
                                 "and weights, discard the run (--restart), or choose another output directory")
        self.batch_dir.mkdir(parents=True, exist_ok=True)
        if path.exists():
            old = yaml.safe_load(path.read_text())
            if old != self.config:
                keys = sorted(k for k in set(old or {}) | set(self.config) if (old or {}).get(k) != self.config.get(k))
                raise ValueError(f"{self.dir} holds a run made with another configuration (differs in: "
                                 f"{', '.join(keys)}); rerun with the same settings to resume it, discard it "
                                 "(--restart), or choose another output directory")
        else:
            if identity is not None:  # before config.yaml: a run directory with a config has its model's record
                atomic_write_bytes(ident_path, json.dumps(identity, indent=2).encode())
            atomic_write_bytes(path, yaml.safe_dump(self.config, sort_keys=False).encode())
        if identity is not None and not ident_path.exists():  # a run made before model.json existed
            atomic_write_bytes(ident_path, json.dumps(identity, indent=2).encode())

    def log(self, message: str) -> None:
        """Append a time-stamped line to ``log.txt`` (one line per event, from any process)."""
        line = f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} pid {os.getpid()} {message}\n"
        with open(self.dir / "log.txt", "a") as f:
            f.write(line)

    def _stem(self, k: int) -> Path:
        return self.batch_dir / f"batch-{k:05d}"

    def done(self, k: int) -> bool:
        return self._stem(k).with_suffix(".json").exists()

    def damaged(self, k: int) -> tuple[Path, str] | None:
        """For a finished batch ``k`` whose files no longer read back (truncated, edited): the file
        and what is wrong with it; ``None`` when both read back (or the batch is not finished)."""
        stem = self._stem(k)
        if not self.done(k):
            return None
        for path, check in ((stem.with_suffix(".json"), json_problem),
                            (stem.with_suffix(".safetensors"), safetensors_problem)):
            problem = check(path)
            if problem is not None:
                return path, problem
        return None

    def discard(self, k: int) -> None:
        """Forget batch ``k`` (its rows first: the batch is unfinished from that moment on)."""
        stem = self._stem(k)
        stem.with_suffix(".json").unlink(missing_ok=True)
        stem.with_suffix(".safetensors").unlink(missing_ok=True)

    def save(self, k: int, rows: list[dict], tensors: dict[str, torch.Tensor]) -> None:
        stem = self._stem(k)
        write_safetensors(stem.with_suffix(".safetensors"), tensors)
        atomic_write_bytes(stem.with_suffix(".json"), json.dumps(rows).encode())

    # cells: the checkpoints inside a batch that is not finished yet
    def cell_path(self, k: int, c: int, tag: str) -> Path:
        """Cell ``c`` (named ``tag``, e.g. ``adv2-mask``) of batch ``k``:
        ``batches/batch-k-cell-cc-TAG.safetensors``, its tensors and, in the file's metadata, its
        record (rows, seconds, forward passes). Written atomically when the cell finishes; removed
        once the batch is (the batch's own two files hold everything)."""
        return self.batch_dir / f"batch-{k:05d}-cell-{c:02d}-{tag}.safetensors"

    def cells(self, k: int) -> list[Path]:
        """The cell files of batch ``k`` on disk."""
        return sorted(self.batch_dir.glob(f"batch-{k:05d}-cell-*.safetensors"))

    def save_cell(self, k: int, c: int, tag: str, tensors: dict[str, torch.Tensor], record: dict) -> None:
        write_safetensors(self.cell_path(k, c, tag), tensors, metadata={CELL_KEY: json.dumps(record)})

    def load_cell(self, k: int, c: int, tag: str) -> tuple[dict[str, torch.Tensor], dict] | None:
        """Cell ``c`` of batch ``k`` as ``(tensors, record)``; ``None`` when it has not finished.
        A :class:`~adv2._io.DamagedFileError` when its file does not read back."""
        path = self.cell_path(k, c, tag)
        if not path.exists():
            return None
        tensors, meta = read_safetensors_with_metadata(path)
        try:
            record = json.loads(meta[CELL_KEY])
        except (KeyError, ValueError) as e:
            raise DamagedFileError(path, f"no cell record ({type(e).__name__})") from None
        return tensors, record

    def discard_cells(self, k: int) -> None:
        """Remove the cell files of batch ``k``."""
        for path in self.cells(k):
            path.unlink(missing_ok=True)

    def load(self, n_batches: int) -> tuple[list[dict], dict[str, torch.Tensor]]:
        """All rows and the tensors of batches ``0 … n_batches − 1`` concatenated in batch order.
        A ``ValueError`` names the batches not finished yet, or the first file that does not read
        back (:class:`~adv2._io.DamagedFileError`; rerunning the run's command recomputes it)."""
        missing = [k for k in range(n_batches) if not self.done(k)]
        if missing:
            raise ValueError(f"{self.dir}: batches {missing[:10]}{' …' if len(missing) > 10 else ''} of {n_batches} "
                             "are not finished yet; run the missing shards (the same command resumes them)")
        rows, parts = [], {}
        for k in range(n_batches):
            stem = self._stem(k)
            try:
                rows += json.loads(stem.with_suffix(".json").read_text())
                tensors = read_safetensors(stem.with_suffix(".safetensors"))
            except DamagedFileError as e:
                raise _damaged(e.path, e.reason, k) from None
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise _damaged(stem.with_suffix(".json"), str(e), k) from None
            for name, t in tensors.items():
                parts.setdefault(name, []).append(t)
        return rows, {name: torch.cat(ts) for name, ts in parts.items()}


def _damaged(path: Path, reason: str, k: int) -> DamagedFileError:
    return DamagedFileError(path, reason, f"batch {k} must be recomputed: rerun the command that made the run (the "
                                          f"shard that ran batch {k}), which redoes it, then merge again")


def discard_run(run_dir: str | Path) -> None:
    """Remove a run's stored batches and results from ``run_dir`` (other files stay)."""
    run_dir = Path(run_dir)
    shutil.rmtree(run_dir / "batches", ignore_errors=True)
    for name in ("config.yaml", "model.json", "env.json", "examples.csv", "summary.json", "tensors.safetensors",
                 "maps.png", "summary.md", "transfer.csv", "report.html", "report.md"):
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
