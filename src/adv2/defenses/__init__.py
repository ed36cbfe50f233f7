"""Defenses: AID, adversarial interpretation distillation of the RTS interpreter.

Its evaluation (``adv2 eval-aid``) is an experiment: :func:`adv2.experiments.aid_eval.eval_aid`.
"""

from adv2.defenses.aid import AID_RECIPE, aid, aid_step_fn

__all__ = ["AID_RECIPE", "aid", "aid_step_fn"]
