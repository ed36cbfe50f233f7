"""Attacks: callables ``atk(x, target_class, target_map=None) -> AttackResult``."""

from adv2.attacks.adv2 import ADV2, PAPER_DEFAULTS
from adv2.attacks.pgd import PGD
from adv2.attacks.result import AttackResult
from adv2.attacks.stadv import StAdv

__all__ = ["ADV2", "PAPER_DEFAULTS", "PGD", "AttackResult", "StAdv"]
