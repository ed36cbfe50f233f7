"""The RTS interpreter: real-time saliency (Dabkowski & Gal, 2017), the model-guided interpreter.

A saliency *network* ``g(x; c)`` trained for one classifier (:class:`~adv2.interpreters.rts.network.RTSNet`:
encoder, class selector, decoder) gives, in a single forward pass, the keep-mask of class ``c``:
the region that alone preserves the classifier's score for ``c`` and whose removal destroys it.

The map is the mask itself, ``(N, 1, H/4, W/4)`` in ``[0, 1]`` (16×16 for the embedded 64×64
models; the paper's 56×56 at 224×224), high where the class evidence is. It is *not* min–max
normalised: an empty mask (a class absent from the image) is a meaningful answer.

A checkpoint records the classifier it was trained for (a fingerprint of its weights) and the
class count; :class:`RTS` refuses a checkpoint made for another classifier with a ``ValueError``.
Trained networks for the embedded models ship with the package: ``RTS.load("shapes-resnet")``,
``RTS.load("shapes-resnet", aid=True)`` (the AID-defended one, :mod:`adv2.defenses`), and
``adv2.interpreters.get("rts", model)`` finds the one made for an embedded ``model``.
Training: :func:`adv2.interpreters.rts.train_rts` / ``adv2 train-rts``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from adv2._validate import check_images, check_targets, model_call, num_classes_of
from adv2.interpreters.base import Interpreter, MapTracker
from adv2.interpreters.rts.network import RTSNet, fingerprint, read_rts
from adv2.models import EMBEDDED
from adv2.models import load as load_model


def weights_dir() -> Path:
    """Folder of the shipped RTS networks (package data)."""
    return Path(str(resources.files("adv2.interpreters") / "weights"))


def shipped_path(name: str, aid: bool = False) -> Path:
    """Path of the shipped RTS network for embedded model ``name`` (``aid``: the AID-trained one)."""
    return weights_dir() / f"{'rts-aid' if aid else 'rts'}-{name}.safetensors"


class RTS(Interpreter):
    """Real-time saliency: a trained :class:`RTSNet` for classifier ``model``.

    ``RTS(model)`` finds the shipped network made for ``model`` (an embedded model, recognised
    by its weights); ``RTS(model, checkpoint=path)`` uses a trained file (``adv2 train-rts``);
    ``RTS(model, net=RTSNet(...))`` wraps a network in memory (training, tests). ``aid=True``
    picks the shipped AID-defended network (interpreter name ``rts-aid``).

    Raises ``ValueError`` if the checkpoint was made for another classifier (weights
    fingerprint) or another number of classes. A loaded network is frozen in eval mode (a ``net``
    passed in is used as it is, e.g. in training mode during AID); ``g(x, c)``
    gives ``(N, 1, H/4, W/4)`` maps in ``[0, 1]``, differentiable w.r.t. ``x``.
    """

    name = "rts"

    def __init__(self, model: nn.Module, checkpoint: str | Path | None = None, net: RTSNet | None = None,
                 aid: bool = False, check_classifier: bool = True):
        super().__init__(model)
        self.record: dict = {}  # training record (set by train_rts / aid)
        if aid:
            self.name = "rts-aid"
        k = num_classes_of(model)
        if net is not None:
            self.net, self.meta = net, {}
        else:
            path = Path(checkpoint) if checkpoint is not None else self._find_shipped(model, aid)
            state, meta = read_rts(path)
            n_cls, width = int(meta["num_classes"]), int(meta["width"])
            if k is not None and n_cls != k:
                raise ValueError(f"RTS checkpoint {path.name} was made for a {n_cls}-class classifier, "
                                 f"but this model has {k} classes")
            if check_classifier and meta.get("fingerprint") and meta["fingerprint"] != fingerprint(model):
                raise ValueError(
                    f"RTS checkpoint {path.name} was made for another classifier "
                    f"({meta.get('classifier') or 'fingerprint ' + meta['fingerprint']}); train one for this "
                    f"model with `adv2 train-rts` (or pass check_classifier=False to use it anyway)")
            self.net = RTSNet(n_cls, width)
            self.net.load_state_dict(state)
            self.meta = meta
        if k is not None and self.net.num_classes != k:
            raise ValueError(f"RTS network has {self.net.num_classes} classes, but the model has {k}")
        if net is None:  # a loaded network is ours: frozen, in eval mode, on the model's device
            self.net.eval()
            for p in self.net.parameters():
                p.requires_grad_(False)
            self.net.to(next(model.parameters(), torch.empty(0)).device)

    @staticmethod
    def _find_shipped(model: nn.Module, aid: bool) -> Path:
        fp = fingerprint(model)
        for path in sorted(weights_dir().glob("rts-aid-*.safetensors" if aid else "rts-shapes-*.safetensors")):
            try:
                _, meta = read_rts(path)
            except ValueError:  # not a finished RTS network: skip it
                continue
            if meta.get("fingerprint") == fp:
                return path
        raise ValueError(
            f"no shipped {'AID-trained ' if aid else ''}RTS network was made for this model (it is not an embedded "
            "model with its shipped weights); train one with `adv2 train-rts` and load it with "
            "RTS(model, checkpoint=PATH)")

    @classmethod
    def load(cls, name: str | Path, model: nn.Module | None = None, aid: bool = False) -> RTS:
        """The RTS network for embedded model ``name`` (``"shapes-resnet"``, ``"shapes-densenet"``;
        the classifier is loaded too unless ``model`` is given), or a checkpoint file ``name``
        for ``model``. ``aid=True``: the AID-trained network."""
        if str(name) in EMBEDDED:
            path = shipped_path(str(name), aid)
            if not path.exists():
                raise ValueError(f"the shipped RTS network {path.name} is missing; reproduce it with "
                                 f"`adv2 {'train-aid' if aid else 'train-rts'} --model {name}`")
            return cls(model if model is not None else load_model(str(name)), checkpoint=path, aid=aid)
        if model is None:
            raise ValueError(f"{name!r} is not an embedded model name; to load a checkpoint file pass the "
                             f"classifier it was trained for: RTS.load(path, model)")
        return cls(model, checkpoint=name, aid=aid)

    def validate(self, x: torch.Tensor) -> None:
        h, w = x.shape[-2:]
        if h % 16 or w % 16:
            raise ValueError(f"RTS needs image sides that are multiples of 16, got {h}×{w}")

    def logits_and_map(self, x, target, create_graph=False, smooth=False):
        logits = self.model(x)
        mask, _ = self.net(x, target)
        return logits, mask

    def forward_all(self, x: torch.Tensor, target: torch.Tensor):
        """``(classifier logits, map, RTS encoder-head logits)`` in one call."""
        logits = self.model(x)
        mask, head = self.net(x, target)
        return logits, mask, head

    @model_call
    def __call__(self, x, target):
        check_images(x)
        self.validate(x)
        target = check_targets(target, x.shape[0], self.net.num_classes, name="target")
        return self.net(x, target)[0]

    def tracker(self, lam_enc: float = 0.1, **options) -> MapTracker:
        """The ADV² loop's view of RTS (:class:`RTSTracker`): ``lam_enc`` weighs the encoder-head term
        (the paper's λ₂ = 0.1). Other options belong to other interpreters and are refused."""
        if options:
            raise ValueError(f"the {self.name} interpreter's tracker takes lam_enc only, got {sorted(options)} "
                             "(n_step, n_reset, n_seeds, mask_loss are MASK's)")
        return RTSTracker(self, lam_enc)

    def __repr__(self):
        src = self.meta.get("classifier") or "in memory"
        return f"RTS({src!r}{', aid' if self.name == 'rts-aid' else ''})"


class RTSTracker(MapTracker):
    """ADV² against RTS: the exact map (one forward of the saliency network) and, as the loop's
    auxiliary loss, ``lam_enc`` × the cross-entropy of the RTS encoder's own head towards ``c_t``
    (the paper's λ₂ = 0.1: the selector-gated features stay coherent with the target class)."""

    def __init__(self, interpreter: RTS, lam_enc: float = 0.1):
        super().__init__(interpreter)
        if not isinstance(lam_enc, (int, float)) or isinstance(lam_enc, bool) or not 0 <= lam_enc < float("inf"):
            raise ValueError(f"lam_enc must be a non-negative number, got {lam_enc!r}")
        self.lam_enc = lam_enc

    def __call__(self, ctx, x_adv, t, last):
        logits, m, head = self.g.forward_all(x_adv, ctx.target_class)
        d = ctx.distance(m)
        with torch.no_grad():
            ok = logits.argmax(1) == ctx.target_class
        aux = self.lam_enc * F.cross_entropy(head, ctx.target_class, reduction="none") if self.lam_enc else None
        return logits, d, (x_adv.detach(), d.detach(), ok), aux
