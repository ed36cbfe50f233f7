"""adv2: ADV² attacks on interpretable deep learning systems (classifier + interpreter).

>>> import adv2
>>> model = adv2.models.load("shapes-resnet")
>>> x, y, masks = adv2.data.shapes(n=8, split="test", seed=0)
>>> g = adv2.interpreters.CAM(model)
>>> res = adv2.attacks.ADV2(model, g, steps=100, warmup=20)(x, (y + 1) % 10)
"""

from adv2 import attacks, data, defenses, interpreters, metrics, models
from adv2._version import __version__

__all__ = ["attacks", "data", "defenses", "interpreters", "metrics", "models", "__version__"]
