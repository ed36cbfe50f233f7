"""Files on disk: atomic writes with the user's permissions, CSV, and safetensors files that
name themselves when they no longer read back.

A leaf module (nothing of adv2 below it), so the experiments, the report and the training loops
share one way of writing files.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
import threading
from pathlib import Path

import torch
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

_UMASK_LOCK = threading.Lock()


class DamagedFileError(ValueError):
    """A stored file that no longer reads back (truncated, edited); the message names it."""

    def __init__(self, path: str | Path, reason: str, hint: str = ""):
        self.path, self.reason = Path(path), " ".join(str(reason).split())  # one line
        super().__init__(f"{self.path}: damaged file ({self.reason})" + (f"; {hint}" if hint else ""))


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux:
    ``/proc/self/status``); elsewhere set and restored at once under a lock."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader (or a process killed mid-write) sees the old file
    or the new one, never a part: a hidden temporary file in the same folder, then ``os.replace``.
    The file gets the permissions an ordinary ``open(path, "w")`` would (``0o666`` less the umask),
    not the owner-only ones of a temporary file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_csv(path: str | Path, rows: list[dict]) -> None:
    """``rows`` (dicts) as a CSV file, written atomically: the columns are every key of the rows in
    the order they first appear, empty where a row has no such key."""
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for r in rows for k in r)), restval="")
    w.writeheader()
    w.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())


def write_safetensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None,
                      ) -> None:
    """``tensors`` (moved to the CPU, made contiguous) as a safetensors file, written atomically."""
    blob = _st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)
    atomic_write_bytes(path, blob)


def safetensors_problem(path: str | Path) -> str | None:
    """Why the safetensors file ``path`` would not read back (missing, shorter or longer than its
    header says, a header that is not JSON), or ``None`` when its structure is whole. Reads the
    header only."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"{size} bytes, shorter than a safetensors header"
            n = int.from_bytes(head, "little")
            if 8 + n > size:
                return f"{size} bytes, its header alone says {8 + n}"
            header = json.loads(f.read(n))
    except FileNotFoundError:
        return "missing"
    except OSError as e:
        return f"cannot be read: {e}"
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "its header is not valid JSON"
    if not isinstance(header, dict):
        return "its header is not a mapping"
    try:
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (TypeError, KeyError, ValueError, IndexError):
        return "its header has no valid data offsets"
    if 8 + n + end != size:
        return f"{size} bytes, its header says {8 + n + end}"
    return None


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; a :class:`DamagedFileError` (a ``ValueError`` naming the
    file) when it is missing, truncated or otherwise does not read back."""
    return read_safetensors_with_metadata(path)[0]


def read_safetensors_with_metadata(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors of a safetensors file and its metadata (the ``metadata`` given to
    :func:`write_safetensors`; ``{}`` when it has none), read in one go; a
    :class:`DamagedFileError` as :func:`read_safetensors`."""
    path = Path(path)
    problem = safetensors_problem(path)
    if problem is not None:
        raise DamagedFileError(path, problem)
    try:
        blob = path.read_bytes()
        n = int.from_bytes(blob[:8], "little")
        metadata = json.loads(blob[8:8 + n]).get("__metadata__") or {}
        return _st_load(blob), dict(metadata)
    except Exception as e:  # noqa: BLE001 — safetensors' own error types: name the file instead
        raise DamagedFileError(path, f"{type(e).__name__}: {e}") from None


def json_problem(path: str | Path) -> str | None:
    """Why the JSON file ``path`` would not read back, or ``None``."""
    try:
        json.loads(Path(path).read_text())
    except FileNotFoundError:
        return "missing"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return f"not valid JSON ({e})"
    return None
