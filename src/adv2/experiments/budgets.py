"""The attacks and interpreters an experiment knows by name, and their budgets.

:data:`ATTACKS` (the baselines ``pgd``, ``stadv`` and ADV² on each perturbation model) and
:data:`KNOWN` interpreters are what configs and ``adv2 demo`` accept; :data:`BUDGETS` are the
measured budgets of the embedded models (``budgets: default | fast`` in a config), changed entry by
entry with :func:`apply_overrides` (``--set mask.n_step=2``).
"""

from __future__ import annotations

import yaml

INTERPRETERS = ("grad", "cam", "gradcam", "mask", "rts")
#: Interpreters the demo can run (``--interpreters``); ``rts-aid`` is the AID-defended RTS.
KNOWN = (*INTERPRETERS, "rts-aid")
#: The demo's attacks: the two baselines (which ignore the interpreter) and ADV² on each
#: perturbation model (``adv2``: L∞; ``adv2-stadv``: the flow field, ``ADV2(perturbation="flow")``).
ATTACKS = ("pgd", "adv2", "stadv", "adv2-stadv")
BASELINES = {"adv2": "pgd", "adv2-stadv": "stadv"}
#: The rows of StAdv matched per example to ADV²-StAdv's flow sizes (a run's ``matched_flow``).
MATCHED = "stadv-matched"
#: Budget sections (besides the interpreters') that ``--set`` may create.
_SECTIONS = ("interpreter", "flow")


def _budget(n: int, pgd_steps: int, warmup: int, steps: int, flow_steps: int, mask: dict) -> dict:
    plain = {k: {"warmup": warmup, "steps": steps, "flow": {"warmup": warmup, "steps": flow_steps}}
             for k in ("grad", "cam", "gradcam", "rts", "rts-aid")}
    plain["grad"]["flow"].update(_GRAD_FLOW)
    return {"n": n, "pgd": {"steps": pgd_steps}, "stadv": {"steps": 300}, **plain, "mask": mask}


#: GRAD's flow variant, in both budgets (benchmarks/stadv.py): 600 joint steps, per-example λ
#: adaptation and Adam's rate 0.03 decayed to 0.003. Its map reaches half of StAdv's distance only
#: by flows several times StAdv's (0.35–0.5 px against 0.05–0.07 on average).
_GRAD_FLOW = {"steps": 600, "lam_adapt": 1.02, "flow_lr": 0.03, "flow_lr_schedule": "cosine"}
#: MASK's attack: the library's default (``ADV2(model, Mask(model))``: two attack seeds whose
#: running MASK states are unrolled in turn, two unrolled steps per joint iteration, 50 PGD + 100
#: joint iterations, a fresh solve every 25); 20 + 60 with a fresh solve every 20 was judged 0.53
#: on 32 images (0.43 on 16). The flow variant 50 + 60, a fresh solve every 20. The interpreter
#: at its defaults (100 Adam steps, two jitter draws per step).
#: docs/notes/2026-12-what-was-tried.md, "ADV²-MASK's cost".
_MASK = {"warmup": 50, "steps": 100, "n_step": 2, "n_reset": 25, "alpha_max": 0.3, "n_seeds": 2, "unroll_seeds": 1,
         "flow": {"warmup": 50, "steps": 60, "n_reset": 20}}
#: ``--fast``: 20 PGD + 40 joint iterations for both MASK attacks, a fresh solve every 20.
_MASK_FAST = {**_MASK, "warmup": 20, "steps": 40, "n_reset": 20, "flow": {**_MASK["flow"], "steps": 40}}
#: Attack budgets for the embedded 64×64 models, found by measurement (benchmarks/quality.py,
#: benchmarks/stadv.py): ``pgd`` and ``stadv`` steps for the baselines; per interpreter, the
#: keyword arguments of ``ADV2`` (its PGD ``warmup``, joint ``steps``, MASK's ``n_step``,
#: ``n_reset``, ``alpha_max``, ``n_seeds``), under ``flow`` those of the flow variant
#: (``ADV2(perturbation="flow")``, on top of its Table 11 defaults), and under ``interpreter``
#: those of the interpreter itself (MASK's Adam ``steps``).
BUDGETS = {
    "default": _budget(12, 100, 50, 300, 300, _MASK),
    "fast": _budget(8, 50, 20, 100, 100, _MASK_FAST),
}


def apply_overrides(budget: dict, overrides: list[str]) -> dict:
    """Set ``KEY=VALUE`` entries (dotted keys into the budget, e.g. ``mask.n_step=2``,
    ``mask.interpreter.lr=0.05``, ``pgd.steps=10``, ``n=4``; values parsed as YAML)."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        *path, last = key.strip().split(".")
        node = budget
        for i, part in enumerate(path):
            if not isinstance(node.get(part), dict):
                if part in _SECTIONS and i == 1 and path[0] in KNOWN:
                    node[part] = {}
                else:
                    raise ValueError(f"unknown setting {key!r}; top-level keys: {sorted(budget)}")
            node = node[part]
        if not last:
            raise ValueError(f"unknown setting {key!r}")
        node[last] = yaml.safe_load(value)
    return budget


def iterations_of(attack) -> int:
    """Iterations an attack runs: PGD/StAdv ``steps``; ADV² ``warmup + steps``."""
    return int(getattr(attack, "warmup", 0) + attack.steps)
