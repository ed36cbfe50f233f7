"""Manipulation attacks on explanations as presets of the one ADV² loop (``ADV2(objective=...)``).

- :class:`Manipulate` (Dombrowski et al., NeurIPS 2019, "Explanations can be manipulated"): keep
  the prediction and its confidence (cross-entropy towards the benign output distribution), move
  the map to an arbitrary target map ``m_t``. ``objective="manipulate"``.
- :class:`Fragility` (Ghorbani et al., AAAI 2019, "Interpretation of neural networks is
  fragile"): keep the prediction, push the map away from the benign one: lower the mass of the
  benign map's top-``k`` pixels (``measure="topk"``) or move its centre of mass
  (``measure="center_of_mass"``). ``objective="fragility"``.

Both run the same loop, perturbation models and step rules as ADV² (L∞ box by default, no PGD
warm-up), with its per-example keep-best: among iterates whose prediction is still the benign
one, the best by the objective. Results are :class:`~adv2.attacks.AttackResult` with
``success`` = the prediction is kept.
"""

from __future__ import annotations

import torch

from adv2._validate import check_images
from adv2.attacks.adv2 import ADV2
from adv2.attacks.result import AttackResult

#: The audit's objective names → what they run.
PRESETS = ("adv2", "manipulate", "fragility")


class _Preset:
    objective = ""

    def __init__(self, model, interpreter, **kwargs):
        kwargs.setdefault("warmup", 0)
        self.model, self.interpreter = model, interpreter
        self.attack = ADV2(model, interpreter, objective=self.objective, **kwargs)

    def _prediction(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x)
        was = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                return self.model(x).argmax(1)
        finally:
            self.model.train(was)

    def __repr__(self):
        return f"{type(self).__name__}({self.attack!r})"


class Manipulate(_Preset):
    """``Manipulate(model, interpreter, eps=..., steps=..., lam=...)(x, target_map)``: keep
    ``f(x)``'s prediction and confidence, bring ``g(x̂)`` to ``target_map`` ``(N, 1, h, w)`` in
    ``[0, 1]``. Keyword arguments are those of :class:`~adv2.attacks.ADV2`."""

    objective = "manipulate"

    def __call__(self, x: torch.Tensor, target_map: torch.Tensor) -> AttackResult:
        return self.attack(x, self._prediction(x), target_map=target_map)


class Fragility(_Preset):
    """``Fragility(model, interpreter, measure="topk" | "center_of_mass", k=0.1, eps=...)(x)``:
    keep ``f(x)``'s prediction, push ``g(x̂)`` away from the benign map ``g(x; f(x))``."""

    objective = "fragility"

    def __call__(self, x: torch.Tensor, target_map: torch.Tensor | None = None) -> AttackResult:
        return self.attack(x, self._prediction(x), target_map=target_map)


def preset(name: str, model, interpreter, **kwargs):
    """The attack of objective ``name``: ``adv2`` (:class:`~adv2.attacks.ADV2`), ``manipulate``,
    ``fragility``."""
    if name == "adv2":
        return ADV2(model, interpreter, **kwargs)
    if name == "manipulate":
        return Manipulate(model, interpreter, **kwargs)
    if name == "fragility":
        return Fragility(model, interpreter, **kwargs)
    raise ValueError(f"unknown objective {name!r}; expected one of {', '.join(PRESETS)}")


def as_perturbation(attack):
    """An adv2 attack as a Captum-style perturbation: ``perturb(inputs, target=..., target_map=None)``
    returns the adversarial images ``(N, 3, H, W)`` (for ``captum.robust.AttackComparator``, pass
    ``additional_attack_arg_names=["target"]``). Presets that keep the prediction take no target."""

    def perturb(inputs: torch.Tensor, target=None, target_map=None) -> torch.Tensor:
        if isinstance(attack, Fragility):
            return attack(inputs, target_map).x_adv
        if isinstance(attack, Manipulate):
            return attack(inputs, target_map).x_adv
        if target is None:
            raise ValueError("this attack needs target= (the target classes)")
        if isinstance(target, int):
            target = torch.full((inputs.shape[0],), target, dtype=torch.long, device=inputs.device)
        return attack(inputs, torch.as_tensor(target, device=inputs.device).long(), target_map=target_map).x_adv

    perturb.__name__ = f"adv2_{type(attack).__name__.lower()}"
    return perturb
