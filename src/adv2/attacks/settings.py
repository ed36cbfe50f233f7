"""``Settings``: the base of the ADV² loop's option objects (perturbations, objectives).

Such an object holds settings only; ``settings()`` returns every one that changes results, and
equality, hashing, ``replace`` and ``repr`` follow from it.
"""

from __future__ import annotations


class Settings:
    def settings(self) -> dict:
        """Every setting that changes results, by its constructor keyword."""
        raise NotImplementedError

    def replace(self, **changes):
        """A copy with ``changes`` applied (validated like the constructor)."""
        return type(self)(**{**self.settings(), **changes})

    def __eq__(self, other):
        return type(self) is type(other) and self.settings() == other.settings()

    def __hash__(self):
        return hash((type(self).__name__, tuple(sorted((k, repr(v)) for k, v in self.settings().items()))))

    def __repr__(self):
        body = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v!r}" for k, v in self.settings().items())
        return f"{type(self).__name__}({body})"
