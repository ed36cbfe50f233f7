"""Evaluation metrics for ADV²: attack effectiveness and interpretation similarity.

Attack effectiveness (against the classifier):

* :func:`success` / :func:`success_rate` -- does the adversarial input reach the target class;
* :func:`confidence` -- softmax probability the classifier assigns to the target class.

Interpretation similarity (between two attribution maps, e.g. the adversarial map and the
benign/target map), all batched and returning one value per example, shape ``(N,)``:

* :func:`lp_distance` -- mean absolute (``p=1``) or root-mean-square (``p=2``) pixel difference;
* :func:`iou_test` -- IoU of the top-k pixel masks, averaged over several k;
* :func:`pointing_game` -- is the map's maximum inside the ground-truth object mask;
* the similarity measures of the explanation-robustness literature: :func:`pearson`,
  :func:`spearman` (rank correlation), :func:`ssim` (structural similarity as scikit-image's
  default), :func:`topk_intersection` and :func:`center_of_mass_shift` (Ghorbani et al. 2019),
  :func:`cosine`.

Maps are float tensors ``(N, 1, h, w)`` (``(N, h, w)`` is accepted too), normally in ``[0, 1]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from adv2._validate import check_images, check_targets, num_classes_of

__all__ = [
    "center_of_mass_shift",
    "confidence",
    "cosine",
    "defender_distances",
    "iou_test",
    "judged_ratio",
    "lp_distance",
    "pearson",
    "pointing_game",
    "spearman",
    "ssim",
    "success",
    "success_rate",
    "topk_intersection",
    "topk_mask",
]

DEFAULT_KS = (0.1, 0.2, 0.3, 0.4, 0.5)


# --------------------------------------------------------------------------- validation


def _as_maps(m, name: str) -> torch.Tensor:
    """Validate a batch of maps and return it as ``(N, 1, h, w)`` (a view, no copy)."""
    if not isinstance(m, torch.Tensor):
        # ValueError (not TypeError): the public contract is one exception type for bad inputs.
        raise ValueError(  # noqa: TRY004
            f"{name} must be a torch.Tensor of shape (N, 1, h, w), got {type(m).__name__}"
        )
    if m.dim() == 3:
        m = m.unsqueeze(1)
    elif m.dim() != 4 or m.shape[1] != 1:
        raise ValueError(
            f"{name} must have shape (N, 1, h, w) or (N, h, w), got rank {m.dim()} "
            f"shape {tuple(m.shape)}"
        )
    if not m.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {m.dtype}")
    if m.shape[2] == 0 or m.shape[3] == 0:
        raise ValueError(f"{name} has empty spatial size, got shape {tuple(m.shape)}")
    if not torch.isfinite(m).all():
        raise ValueError(f"{name} contains NaN or Inf values")
    return m


def _map_pair(a, b) -> tuple[torch.Tensor, torch.Tensor]:
    a4, b4 = _as_maps(a, "a"), _as_maps(b, "b")
    if a4.shape != b4.shape:
        raise ValueError(f"map shapes must match, got a {tuple(a.shape)} and b {tuple(b.shape)}")
    return a4, b4


def _check_k(k, name: str = "k") -> float:
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not (0 < k <= 1):
        raise ValueError(f"{name} must be a number in (0, 1], got {k!r}")
    return float(k)


def _model_device(model: nn.Module, fallback: torch.device) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return fallback


# --------------------------------------------------------------------------- classifier


@torch.no_grad()
def _logits(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    dev = _model_device(model, x.device)
    outs = []
    for i in range(0, x.shape[0], batch_size):
        out = model(x[i : i + batch_size].to(dev))
        if not isinstance(out, torch.Tensor) or out.dim() != 2:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"model must return logits of shape (N, K), got {shape}")
        outs.append(out.float())
    return torch.cat(outs).to(x.device)


def success(
    model: nn.Module, x_adv: torch.Tensor, target_class: torch.Tensor, batch_size: int = 256
) -> torch.Tensor:
    """Whether the classifier predicts the target class on each adversarial input.

    Args:
        model: classifier taking images in ``[0, 1]`` and returning logits ``(N, K)``. It is
            used as is (put it in ``eval()`` mode yourself); evaluated under ``torch.no_grad``.
        x_adv: float images ``(N, 3, H, W)`` in ``[0, 1]``.
        target_class: integer tensor ``(N,)`` with values in ``[0, K)``.
        batch_size: inputs per forward pass.

    Returns:
        Bool tensor ``(N,)``: ``model(x_adv).argmax(1) == target_class``.
    """
    x_adv = check_images(x_adv, "x_adv")
    t = check_targets(target_class, x_adv.shape[0], num_classes_of(model))
    logits = _logits(model, x_adv, batch_size)
    return logits.argmax(1) == t.to(logits.device)


def confidence(
    model: nn.Module, x: torch.Tensor, target_class: torch.Tensor, batch_size: int = 256
) -> torch.Tensor:
    """Softmax probability that the classifier assigns to ``target_class``.

    Args:
        model: classifier taking images in ``[0, 1]`` and returning logits ``(N, K)``; used as
            is (``eval()`` it yourself), evaluated under ``torch.no_grad``.
        x: float images ``(N, 3, H, W)`` in ``[0, 1]``.
        target_class: integer tensor ``(N,)`` with values in ``[0, K)``.
        batch_size: inputs per forward pass.

    Returns:
        Float tensor ``(N,)`` with values in ``[0, 1]``.
    """
    x = check_images(x, "x")
    t = check_targets(target_class, x.shape[0], num_classes_of(model))
    logits = _logits(model, x, batch_size)
    if int(t.max()) >= logits.shape[1]:
        raise ValueError(
            f"target_class out of range for a model with {logits.shape[1]} classes, "
            f"got max {int(t.max())}"
        )
    probs = logits.softmax(1)
    return probs.gather(1, t.to(probs.device).view(-1, 1)).squeeze(1)


def success_rate(success) -> float:
    """Fraction of successes: mean of a bool tensor (any shape); ``0.0`` when it is empty."""
    if not isinstance(success, torch.Tensor) or success.dtype != torch.bool:
        got = success.dtype if isinstance(success, torch.Tensor) else type(success).__name__
        raise ValueError(f"success must be a bool tensor, got {got}")
    if success.numel() == 0:
        return 0.0
    return float(success.float().mean())


# --------------------------------------------------------------------------- map similarity


def lp_distance(a: torch.Tensor, b: torch.Tensor, p: int = 1) -> torch.Tensor:
    """Size-normalised L_p distance between two batches of maps.

    ``p=1``: ``sum|a - b| / (h*w)`` (mean absolute difference);
    ``p=2``: ``sqrt(sum (a - b)^2) / sqrt(h*w)`` (root-mean-square difference).
    For maps in ``[0, 1]`` the result lies in ``[0, 1]``.

    Args:
        a, b: float maps ``(N, 1, h, w)`` or ``(N, h, w)`` of the same shape, finite.
        p: 1 or 2.

    Returns:
        Float tensor ``(N,)``.
    """
    if isinstance(p, bool) or p not in (1, 2):
        raise ValueError(f"p must be 1 or 2, got {p!r}")
    a4, b4 = _map_pair(a, b)
    hw = a4.shape[2] * a4.shape[3]
    d = (a4 - b4).flatten(1)
    if p == 1:
        return d.abs().sum(1) / hw
    return d.pow(2).sum(1).sqrt() / math.sqrt(hw)


def defender_distances(g, x: torch.Tensor, label: torch.Tensor, examples: dict, seeds=(0, 100),
                       known: dict | None = None) -> tuple[dict, torch.Tensor]:
    """A random interpreter (MASK, through its jitter) as a defender sees it.

    For each defender seed ``s`` the benign map ``g_s(x, label)`` and the map of each example
    ``g_s(x_a, target_a)`` are solved with that seed (``g.with_seed(s)``; the seeds should be ones
    the attack never used), and the example's L1 to the benign map taken.

    Args:
        g: an interpreter with ``with_seed`` and ``seed`` (:class:`adv2.interpreters.Mask`).
        x: benign images ``(N, 3, H, W)`` in ``[0, 1]``; ``label``: their classes ``(N,)``.
        examples: ``{name: (x_adv (N, 3, H, W), target (N,))}``, e.g. a baseline's and ADV²'s.
        seeds: at least two distinct defender seeds.
        known: maps already made with ``g``'s own seed (``{"benign": map, name: map}``), reused
            when ``g.seed`` is among ``seeds``.

    Returns:
        ``(l1, floor)``: ``l1[name]`` ``(N,)`` the mean over the seeds of the L1 between the
        example's map and the benign map of the same seed; ``floor`` ``(N,)`` the mean L1
        between two seeds' benign maps of the same image — MASK's own noise, below which no
        attack can be judged.
    """
    seeds = [int(s) for s in seeds]
    if len(set(seeds)) < 2:
        raise ValueError(f"defender seeds must hold at least two distinct seeds, got {seeds}")
    known = known or {}
    benign, dist = [], {a: [] for a in examples}
    for s in seeds:
        own = s == getattr(g, "seed", None)
        gs = g if own else g.with_seed(s)
        with torch.no_grad():
            b = known["benign"] if own and "benign" in known else gs(x, label)
            benign.append(b)
            for a, (xa, ta) in examples.items():
                m = known[a] if own and a in known else gs(xa, ta)
                dist[a].append(lp_distance(m, b, p=1))
    floor = torch.stack([lp_distance(benign[i], benign[j], p=1)
                         for i in range(len(seeds)) for j in range(i + 1, len(seeds))]).mean(0)
    return {a: torch.stack(d).mean(0) for a, d in dist.items()}, floor


def judged_ratio(adv: torch.Tensor, base: torch.Tensor, floor: torch.Tensor, ok_adv: torch.Tensor | None = None,
                 ok_base: torch.Tensor | None = None) -> float:
    """The judged figure ``(ADV² − floor) / (baseline − floor)``: the means of ADV²'s and the
    baseline's defender L1 (:func:`defender_distances`) and of the floor, over the examples where
    both attacks succeeded (``ok_adv``, ``ok_base``, bool ``(N,)``; default all). 0 means ADV²'s
    map is as close to the benign map as a second run of the interpreter is; 1 means no closer
    than the baseline's. ``nan`` when no example counts or the baseline is not above the floor."""
    both = torch.ones_like(floor, dtype=torch.bool)
    for ok in (ok_adv, ok_base):
        if ok is not None:
            both = both & torch.as_tensor(ok, dtype=torch.bool, device=floor.device)
    if not bool(both.any()):
        return float("nan")
    f = float(floor[both].mean())
    above = float(base[both].mean()) - f
    return (float(adv[both].mean()) - f) / above if above > 0 else float("nan")


def topk_mask(m: torch.Tensor, k: float) -> torch.Tensor:
    """Binary mask of the top-``k`` fraction of pixels of each map.

    Exactly ``max(1, round(k * h * w))`` pixels are selected per map (Python ``round``). Ties
    are broken deterministically: among equal values the one with the lower flattened (row-major)
    index is taken first (a stable descending sort of the flattened map).

    Args:
        m: float maps ``(N, 1, h, w)`` or ``(N, h, w)``, finite.
        k: fraction in ``(0, 1]``.

    Returns:
        Bool tensor with the same shape as ``m``.
    """
    k = _check_k(k)
    m4 = _as_maps(m, "m")
    n, _, h, w = m4.shape
    count = max(1, round(k * h * w))
    flat = m4.reshape(n, h * w)
    idx = torch.sort(flat, dim=1, descending=True, stable=True).indices[:, :count]
    mask = torch.zeros(n, h * w, dtype=torch.bool, device=m4.device)
    mask.scatter_(1, idx, True)
    return mask.view(m.shape)


def iou_test(a: torch.Tensor, b: torch.Tensor, ks: Sequence[float] = DEFAULT_KS) -> torch.Tensor:
    """IoU test of the ADV² paper: top-k mask overlap, averaged over several k.

    For each ``k`` both maps are binarised with :func:`topk_mask` (their top ``k`` fraction of
    pixels) and the intersection-over-union of the two masks is computed; the result is the mean
    over ``ks``. 1 means the same top-k regions for every k, 0 fully disjoint ones.

    Args:
        a, b: float maps ``(N, 1, h, w)`` or ``(N, h, w)`` of the same shape, finite.
        ks: fractions, each in ``(0, 1]`` (a single number is accepted too).

    Returns:
        Float tensor ``(N,)`` with values in ``[0, 1]``.
    """
    a4, b4 = _map_pair(a, b)
    if isinstance(ks, (int, float)) and not isinstance(ks, bool):
        ks = (ks,)
    try:
        ks = tuple(ks)
    except TypeError:
        raise ValueError(f"ks must be a sequence of numbers in (0, 1], got {ks!r}") from None
    if not ks:
        raise ValueError("ks must contain at least one fraction in (0, 1]")
    ks = tuple(_check_k(k, "each k in ks") for k in ks)
    total = torch.zeros(a4.shape[0], dtype=torch.float32, device=a4.device)
    for k in ks:
        ma, mb = topk_mask(a4, k).flatten(1), topk_mask(b4, k).flatten(1)
        inter = (ma & mb).sum(1).float()
        union = (ma | mb).sum(1).float()  # >= count >= 1
        total += inter / union
    return total / len(ks)


def pointing_game(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Pointing game: is the map's maximum inside the ground-truth object mask.

    If the maps are at a different resolution than the masks (e.g. a 7x7 CAM against 64x64
    masks) each map is first **upsampled bilinearly** (``align_corners=False``) to the mask's
    ``(H, W)``, and the argmax is taken on the upsampled map (first maximum in row-major order
    on ties). A pixel is inside the object where a bool mask is ``True`` or a numeric mask is
    ``> 0.5``.

    Args:
        maps: float maps ``(N, 1, h, w)`` or ``(N, h, w)``, finite.
        masks: object masks ``(N, 1, H, W)`` or ``(N, H, W)``, bool or numeric in ``{0, 1}``.

    Returns:
        Bool tensor ``(N,)``.
    """
    m4 = _as_maps(maps, "maps")
    if not isinstance(masks, torch.Tensor):
        raise ValueError(  # noqa: TRY004
            f"masks must be a torch.Tensor of shape (N, 1, H, W), got {type(masks).__name__}"
        )
    g = masks.unsqueeze(1) if masks.dim() == 3 else masks
    if g.dim() != 4 or g.shape[1] != 1:
        raise ValueError(
            f"masks must have shape (N, 1, H, W) or (N, H, W), got rank {masks.dim()} "
            f"shape {tuple(masks.shape)}"
        )
    if g.shape[0] != m4.shape[0]:
        raise ValueError(
            f"maps and masks must have the same batch size, got maps {tuple(maps.shape)} "
            f"and masks {tuple(masks.shape)}"
        )
    if g.shape[2] == 0 or g.shape[3] == 0:
        raise ValueError(f"masks has empty spatial size, got shape {tuple(masks.shape)}")
    if g.dtype == torch.bool:
        inside = g
    else:
        if g.is_floating_point() and not torch.isfinite(g).all():
            raise ValueError("masks contains NaN or Inf values")
        inside = g > 0.5
    H, W = g.shape[2], g.shape[3]
    if m4.shape[2:] != (H, W):
        m4 = F.interpolate(m4, size=(H, W), mode="bilinear", align_corners=False)
    idx = m4.flatten(1).argmax(1)
    return inside.flatten(1).to(idx.device).gather(1, idx.view(-1, 1)).squeeze(1)


# --------------------------------------------------------------------------- similarity measures


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of the pixels of two maps, per example: ``(N,)`` in ``[-1, 1]``
    (``scipy.stats.pearsonr``); 0 where either map is constant (where scipy gives NaN)."""
    a4, b4 = _map_pair(a, b)
    x, y = a4.flatten(1).double(), b4.flatten(1).double()
    x, y = x - x.mean(1, keepdim=True), y - y.mean(1, keepdim=True)
    den = x.norm(dim=1) * y.norm(dim=1)
    r = (x * y).sum(1) / den.clamp_min(1e-300)
    return torch.where(den > 0, r.clamp(-1, 1), torch.zeros_like(r)).float()


def _ranks(v: torch.Tensor) -> torch.Tensor:
    """Average ranks (1-based, ties share their mean rank) along dim 1, as ``scipy.stats.rankdata``."""
    s = torch.sort(v, dim=1).values.contiguous()
    left = torch.searchsorted(s, v.contiguous(), side="left")
    right = torch.searchsorted(s, v.contiguous(), side="right")
    return (left + right + 1).double() / 2


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of the pixels of two maps, per example: ``(N,)`` in ``[-1, 1]``
    (``scipy.stats.spearmanr``: Pearson of average ranks); 0 where either map is constant."""
    a4, b4 = _map_pair(a, b)
    ra, rb = _ranks(a4.flatten(1)), _ranks(b4.flatten(1))
    n = ra.shape[0]
    return pearson(ra.view(n, 1, 1, -1), rb.view(n, 1, 1, -1))


def ssim(a: torch.Tensor, b: torch.Tensor, win_size: int = 7, data_range: float = 1.0) -> torch.Tensor:
    """Mean structural similarity of two maps, per example: ``(N,)`` in ``[-1, 1]``.

    The definition of ``skimage.metrics.structural_similarity(a, b, data_range=1.0)``: a uniform
    ``win_size``×``win_size`` window, sample covariances, K1 = 0.01, K2 = 0.03, averaged over
    the positions where the window fits. Maps smaller than the window use the largest odd window
    that fits (scikit-image refuses them)."""
    a4, b4 = _map_pair(a, b)
    if isinstance(win_size, bool) or not isinstance(win_size, int) or win_size < 1 or win_size % 2 == 0:
        raise ValueError(f"win_size must be an odd positive integer, got {win_size!r}")
    if not isinstance(data_range, (int, float)) or isinstance(data_range, bool) or not data_range > 0:
        raise ValueError(f"data_range must be a positive number, got {data_range!r}")
    small = min(a4.shape[-2:])
    win = min(win_size, small if small % 2 else small - 1)
    x, y = a4.double(), b4.double()
    np_ = win * win
    cov = np_ / (np_ - 1) if np_ > 1 else 1.0

    def mean(t):
        return F.avg_pool2d(t, win, stride=1)

    ux, uy = mean(x), mean(y)
    vx = cov * (mean(x * x) - ux * ux)
    vy = cov * (mean(y * y) - uy * uy)
    vxy = cov * (mean(x * y) - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1).float()


def topk_intersection(a: torch.Tensor, b: torch.Tensor, k: float = 0.1) -> torch.Tensor:
    """Top-k intersection (Ghorbani et al. 2019): the fraction of the top-``k`` pixels of ``a``
    (``k`` a fraction of the map, as :func:`topk_mask`) that are also among the top-``k`` of
    ``b``: ``(N,)`` in ``[0, 1]``."""
    a4, b4 = _map_pair(a, b)
    ma, mb = topk_mask(a4, k).flatten(1), topk_mask(b4, k).flatten(1)
    return (ma & mb).sum(1).float() / ma.sum(1).float()


def _center_of_mass(m: torch.Tensor) -> torch.Tensor:
    """Centres of mass ``(N, 2)`` (row, column, in pixels of the map) of ``(N, 1, h, w)`` maps;
    a map with no mass has its centre in the middle."""
    n, _, h, w = m.shape
    mass = m.double().flatten(1).sum(1)
    rows = torch.arange(h, dtype=torch.float64, device=m.device)
    cols = torch.arange(w, dtype=torch.float64, device=m.device)
    r = (m.double().sum(3)[:, 0] * rows).sum(1)
    c = (m.double().sum(2)[:, 0] * cols).sum(1)
    middle = torch.tensor([(h - 1) / 2, (w - 1) / 2], dtype=torch.float64, device=m.device)
    com = torch.stack([r, c], 1) / mass.clamp_min(1e-300)[:, None]
    return torch.where((mass > 0)[:, None], com, middle)


def center_of_mass_shift(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Distance between the maps' centres of mass (Ghorbani et al. 2019), in pixels of the map
    (``scipy.ndimage.center_of_mass``; maps should be non-negative): ``(N,)``, ≥ 0."""
    a4, b4 = _map_pair(a, b)
    return (_center_of_mass(a4) - _center_of_mass(b4)).norm(dim=1).float()


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of the flattened maps, per example: ``(N,)`` in ``[-1, 1]``; 0 where
    either map is all zero."""
    a4, b4 = _map_pair(a, b)
    x, y = a4.flatten(1).double(), b4.flatten(1).double()
    den = x.norm(dim=1) * y.norm(dim=1)
    return torch.where(den > 0, (x * y).sum(1) / den.clamp_min(1e-300), torch.zeros_like(den)).float()
