"""Running a batched computation in smaller pieces when the whole batch does not fit in memory.

Every adv2 attack and interpreter is per example (a result never depends on the batch it was
computed in), so a batch that runs out of memory can be split in halves, each half run on its
own, and the results concatenated: the same results as one call (up to the last-bit rounding that
batched kernels vary with the batch size), in more calls.
"""

from __future__ import annotations

import dataclasses

import torch

from adv2.attacks.result import AttackResult


def is_out_of_memory(e: BaseException) -> bool:
    """Whether ``e`` is an allocation failure (CUDA or CPU), not another error."""
    if isinstance(e, torch.cuda.OutOfMemoryError):
        return True
    msg = str(e)
    return isinstance(e, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg
                                            or "not enough memory" in msg)


def concat(parts: list):
    """Concatenate per-example results along dimension 0: tensors, or :class:`AttackResult` s
    field by field (``None`` fields stay ``None``)."""
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(parts)
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
