"""Attacks: callables ``atk(x, target_class, target_map=None) -> AttackResult``.

ADV² takes its settings as objects: a perturbation (:class:`Linf`, :class:`LinfSearch`,
:class:`Flow`) and an objective (:class:`Hide`; :mod:`adv2.attacks.objectives` also has
``Manipulate`` and ``Fragility`` objectives, run by the presets of the same names here).
"""

from adv2.attacks import flow, objectives, perturbations
from adv2.attacks.adv2 import ADV2, FLAT_KEYS, FLOW_DEFAULTS, PAPER_DEFAULTS
from adv2.attacks.objectives import Hide
from adv2.attacks.perturbations import Flow, Linf, LinfSearch
from adv2.attacks.pgd import PGD
from adv2.attacks.presets import PRESETS, Fragility, Manipulate, as_perturbation, preset
from adv2.attacks.result import AttackResult
from adv2.attacks.stadv import StAdv

__all__ = ["ADV2", "FLAT_KEYS", "FLOW_DEFAULTS", "PAPER_DEFAULTS", "PGD", "PRESETS", "AttackResult", "Flow",
           "Fragility", "Hide", "Linf", "LinfSearch", "Manipulate", "StAdv", "as_perturbation", "flow", "objectives",
           "perturbations", "preset"]
