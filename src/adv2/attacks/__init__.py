"""Attacks: callables ``atk(x, target_class, target_map=None) -> AttackResult``."""

from adv2.attacks import flow
from adv2.attacks.adv2 import ADV2, FLOW_DEFAULTS, PAPER_DEFAULTS
from adv2.attacks.pgd import PGD
from adv2.attacks.presets import PRESETS, Fragility, Manipulate, as_perturbation, preset
from adv2.attacks.result import AttackResult
from adv2.attacks.stadv import StAdv

__all__ = ["ADV2", "FLOW_DEFAULTS", "PAPER_DEFAULTS", "PGD", "PRESETS", "AttackResult", "Fragility", "Manipulate",
           "StAdv", "as_perturbation", "flow", "preset"]
