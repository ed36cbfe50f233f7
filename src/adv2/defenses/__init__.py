"""Defenses: AID, adversarial interpretation distillation of the RTS interpreter."""

from adv2.defenses.aid import AID_RECIPE, aid, eval_aid

__all__ = ["AID_RECIPE", "aid", "eval_aid"]
