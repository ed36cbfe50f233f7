"""How a run divides a batch's work: smaller pieces when the batch does not fit in memory, and
cells (one attack × interpreter on the batch) that are checkpointed and tracked on the progress bar.

Every adv2 attack and interpreter is per example (a result never depends on the batch it was
computed in), so a batch that runs out of memory can be split in halves, each half run on its
own, and the results concatenated: the same results as one call (up to the last-bit rounding that
batched kernels vary with the batch size), in more calls (:func:`split_on_oom`).

A cell starts from a global torch generator seeded by :func:`cell_seed` and its progress is shown
by :class:`RunProgress`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from adv2._io import atomic_write_bytes
from adv2.attacks.result import AttackResult


def is_out_of_memory(e: BaseException) -> bool:
    """Whether ``e`` is an allocation failure (CUDA or CPU), not another error."""
    if isinstance(e, torch.cuda.OutOfMemoryError):
        return True
    msg = str(e)
    return isinstance(e, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg
                                            or "not enough memory" in msg)


def concat(parts: list):
    """Concatenate per-example results along dimension 0: tensors, :class:`AttackResult` s
    field by field (``None`` fields stay ``None``), and tuples or dicts of those, element by
    element."""
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(parts)
    if isinstance(first, tuple):
        return tuple(concat([p[i] for p in parts]) for i in range(len(first)))
    if isinstance(first, dict):
        return {k: concat([p[k] for p in parts]) for k in first}
    if isinstance(first, AttackResult):
        fields = {}
        for f in dataclasses.fields(AttackResult):
            values = [getattr(p, f.name) for p in parts]
            fields[f.name] = None if values[0] is None else torch.cat(values)
        return AttackResult(**fields)
    raise TypeError(f"cannot concatenate results of type {type(first).__name__}")


def split_on_oom(fn, *args, min_size: int = 1, on_split=None, **kwargs):
    """``fn(*args, **kwargs)`` where every tensor in ``args`` and ``kwargs`` (and ``None``) is
    batched along dimension 0; if it runs out of memory, the batch is halved and each half run
    the same way (recursively, down to ``min_size`` examples, where the error is raised as it is),
    and the results are concatenated with :func:`concat`. ``on_split(n)`` is called with the size
    of the batch that was split (for a log line)."""
    n = next(a.shape[0] for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor))
    try:
        return fn(*args, **kwargs)
    except (RuntimeError, torch.cuda.OutOfMemoryError) as e:
        if not is_out_of_memory(e) or n <= min_size:
            raise
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if on_split is not None:
        on_split(n)
    half = (n + 1) // 2

    def part(v, sl):
        return v[sl] if isinstance(v, torch.Tensor) else v

    out = []
    for sl in (slice(0, half), slice(half, n)):
        out.append(split_on_oom(fn, *(part(a, sl) for a in args), min_size=min_size, on_split=on_split,
                                **{k: part(v, sl) for k, v in kwargs.items()}))
    return concat(out)


# --- cells: the pieces of a batch that a run checkpoints, and the progress they make -----------------------


def cell_seed(seed: int, batch: int, cell: int) -> int:
    """The seed of the global torch generator at the start of cell ``cell`` of batch ``batch``: a
    pure function of ``(seed, batch, cell)``, so a cell never depends on what earlier cells drew
    (a resumed run starts each cell where an uninterrupted run would)."""
    return int(np.random.SeedSequence([int(seed), int(batch), int(cell), 0xCE11]).generate_state(1)[0])


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


class RunProgress:
    """The progress of a run's cells on one bar (a ``tqdm``; a disabled one shows nothing).

    The bar counts image-cells: a cell (one attack × interpreter on one batch) of ``B`` images is
    ``B`` units, so ``n/total`` reads "how many of the (image, cell) pairs are done". Inside a
    cell the bar advances with the model's forward passes (:meth:`tick`, from a forward hook the
    runner registers; no change to any computation) as a fraction of the passes that cell makes:
    measured exactly by the first cell of that kind (the same in every batch), estimated before
    (``passes`` given to :meth:`begin`, bounded so that the bar never passes the cell's end). An
    attack that reports its iterations (:meth:`iteration`) refines the estimate. The postfix names
    the running cell, its seconds per image and the time left, from the measured seconds per image
    of each kind of cell (``~`` while some kind still runs for the first time and is estimated).

    Under ``torchrun`` every rank writes its counts to ``share`` (a small JSON file, atomically,
    every ``every`` seconds at most) and rank 0 (``others``: the other ranks' files) shows the
    whole job: the sum of the counts and the largest time left."""

    def __init__(self, bar, share: Path | None = None, others: list[Path] | None = None, every: float = 1.0):
        self.bar, self.share, self.others, self.every = bar, share, list(others or []), every
        self.total = 0.0  # this process's units
        self.done = 0.0  # units of finished cells
        self.known: dict[str, dict] = {}  # kind -> {"passes", "spi" (s/img), "cost" (spi per estimated pass)}
        self.todo: dict[str, list] = {}  # kind -> [images, estimated passes per cell] of the cells not begun
        self.cell: dict | None = None
        self.remote = (0.0, 0.0, 0.0)  # other ranks: done, total, seconds left
        self._shown = 0.0  # units on the bar (this process's and the others')
        self._t_share = self._t_read = self._t_post = 0.0
        self._waiting = False

    # planning and measurements
    def plan(self, kind: str, images: int, passes: float) -> None:
        """Count a cell still to run: ``images`` images, about ``passes`` forward passes."""
        entry = self.todo.setdefault(kind, [0, float(passes)])
        entry[0] += int(images)
        self.total += images
        self._refresh(force=True)

    def learn(self, kind: str, images: int, seconds: float, passes: int, estimate: float) -> None:
        """A cell of ``kind`` ran (here or in an earlier run): its seconds and forward passes."""
        if images > 0 and seconds >= 0:
            self.known[kind] = {"passes": int(passes), "spi": seconds / images,
                                "cost": seconds / images / max(float(estimate), 1.0)}

    def _spi(self, kind: str, passes: float) -> tuple[float | None, bool]:
        """Seconds per image of a cell of ``kind``: measured, or estimated (``True``) from the
        measured seconds per estimated pass of the other kinds."""
        if kind in self.known:
            return self.known[kind]["spi"], False
        costs = sorted(k["cost"] for k in self.known.values())
        return (costs[len(costs) // 2] * passes, True) if costs else (None, True)

    def seconds_left(self) -> tuple[float | None, bool]:
        rest, rough = 0.0, False
        for kind, (images, passes) in self.todo.items():
            if images <= 0:
                continue
            spi, est = self._spi(kind, passes)
            if spi is None:
                return None, True
            rest, rough = rest + spi * images, rough or est
        c = self.cell
        if c is not None:
            spi, est = self._spi(c["kind"], c["estimate"])
            elapsed = time.time() - c["t0"]
            if est and c["frac"] > 0.02:
                spi, est = elapsed / (c["frac"] * c["images"]), True
            if spi is None:
                return None, True
            rest, rough = rest + max(spi * c["images"] - elapsed, 0.0), rough or est
        return rest, rough

    # the running cell
    def begin(self, kind: str, label: str, images: int, passes: float, iterations: int | None = None) -> None:
        """Cell ``kind`` (shown as ``label``) starts on ``images`` images, about ``passes`` passes;
        ``iterations``: how many its attack reports (:meth:`iteration`), if it reports them."""
        entry = self.todo.get(kind)
        if entry is not None and entry[0] >= images:
            entry[0] -= images
        else:  # a cell that was not planned (its stored file did not read back): count it now
            self.total += images
        self.cell = {"kind": kind, "label": label, "images": int(images), "estimate": max(float(passes), 1.0),
                     "passes": 0, "frac": 0.0, "t0": time.time(), "it_passes": 0,
                     "it": (0, int(iterations)) if iterations else None}
        self._refresh(force=True)

    def tick(self) -> None:
        """One forward pass of the model in the running cell."""
        c = self.cell
        if c is None:
            return
        c["passes"] += 1
        known = self.known.get(c["kind"])
        if known is not None and known["passes"] > 0:
            f = c["passes"] / known["passes"]
        elif c["it"] is not None:  # the attack's iterations, and passes within the running one
            t, total = c["it"]
            per = c["it_passes"] / t if t > 0 else c["estimate"] / total
            f = (t + _bounded((c["passes"] - c["it_passes"]) / max(per, 1.0))) / total
        else:
            f = _bounded(c["passes"] / c["estimate"])
        self._advance(min(f, 0.999))

    def iteration(self, done: int, total: int) -> None:
        """The running attack finished iteration ``done`` of ``total`` (an attack's callback)."""
        c = self.cell
        if c is None or total <= 0:
            return
        c["it"], c["it_passes"] = (int(done), int(total)), c["passes"]
        if c["kind"] not in self.known:
            self._advance(min(done / total, 0.999))

    def end(self, seconds: float) -> int:
        """The running cell finished after ``seconds``: its forward passes (learnt, with its
        seconds per image, for the later cells of its kind)."""
        c = self.cell
        if c is None:
            return 0
        self.learn(c["kind"], c["images"], seconds, c["passes"], c["estimate"])
        self.done += c["images"]
        self.cell = None
        self._refresh(force=True)
        return c["passes"]

    def close(self) -> None:
        self._refresh(force=True, final=True)
        self.bar.close()

    # display
    def _advance(self, f: float) -> None:
        c = self.cell
        if f > c["frac"]:
            c["frac"] = f
        self._refresh()

    def _refresh(self, force: bool = False, final: bool = False) -> None:
        now = time.time()
        mine = self.done + (self.cell["frac"] * self.cell["images"] if self.cell is not None else 0.0)
        post = force or now - self._t_post >= 0.5
        write = self.share is not None and (force or now - self._t_share >= self.every)
        left, rough = self.seconds_left() if post or write else (None, True)
        if write:
            self._t_share = now
            try:
                atomic_write_bytes(self.share, json.dumps({"done": mine, "total": self.total, "left": left,
                                                           "rough": rough, "final": final}).encode())
            except OSError:  # the bar is not worth stopping a run for; rank 0 shows older counts
                pass
        if self.others and (force or now - self._t_read >= self.every):
            self._t_read = now
            self.remote = self._read_others()
        r_done, r_total, r_left = self.remote
        total = self.total + r_total
        if self.bar.total != total:
            self.bar.total = total
        if left is not None and self.others:
            left = None if r_left is None else max(left, r_left)
        if post:
            self._t_post = now
            c = self.cell
            what = "waiting for the other ranks" if c is None and self._waiting and not final else ""
            if c is not None:  # seconds per image: this cell's so far, or its kind's measured
                elapsed = now - c["t0"]
                spi = elapsed / (c["frac"] * c["images"]) if c["frac"] > 0 and elapsed >= 0.2 else \
                    self.known.get(c["kind"], {}).get("spi")
                what = f"{c['label']} {f'{spi:.2f} s/img' if spi is not None else '…'}"
            eta = f"{'~' if rough else ''}{_clock(left)} left" if not final else "done"
            self.bar.set_postfix_str(f"{what}, {eta}" if what else eta, refresh=False)
        shown = mine + r_done
        if shown > self._shown or force:
            self.bar.update(max(shown - self._shown, 0.0))
            self._shown = max(shown, self._shown)

    def _read_others(self) -> tuple[float, float, float | None]:
        done = total = 0.0
        left: float | None = 0.0
        for path in self.others:
            try:
                d = json.loads(Path(path).read_text())
            except (OSError, ValueError):
                left = None  # a rank that has not written yet
                continue
            done, total = done + float(d["done"]), total + float(d["total"])
            left = None if left is None or d.get("left") is None else max(left, float(d["left"]))
        return done, total, left

    def poll(self) -> None:
        """Refresh the bar (the other ranks' counts) while this process waits for them."""
        self._waiting = True
        self._refresh()


def _bounded(r: float) -> float:
    """A fraction from ``r`` = passes so far / estimated passes: ``r`` up to 0.9, then a tail that
    keeps moving towards (and never reaches) 1, whatever the estimate's error."""
    return r if r <= 0.9 else 1.0 - 0.1 * math.exp(-(r - 0.9) / 0.1)
