"""The embedded benchmark: procedurally generated shape images with ground-truth masks.

Each 64×64 RGB image holds one object of one of ten shape classes (see :data:`CLASSES`) at a
random position, size and rotation, filled with a random colour texture, on a textured
background with clutter (line segments and small blobs, drawn behind the object). Several
classes differ only by fine detail (circle / hexagon / pentagon / ellipse), which makes the
models trained on it behave like ImageNet models under attack: accurate, yet easy to fool at
ε = 8/255.

Every example ``i`` of a split is drawn from its own random stream, seeded by
``(seed, split, i)``: the same seed gives the same images bit for bit, example ``i`` does not
depend on ``n``, and the train and test splits use disjoint streams.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

CLASSES = (
    "circle",
    "ellipse",
    "triangle",
    "square",
    "pentagon",
    "hexagon",
    "star",
    "cross",
    "rhombus",
    "half-disk",
)
NUM_CLASSES = len(CLASSES)
SIZE = 64
SPLITS = {"train": 0, "test": 1, "val": 2}
_SS = 2  # supersampling factor per axis for anti-aliased edges


def _example_params(rng: np.random.Generator, label: int) -> dict:
    """Draw every random choice of one example from its own generator."""
    p: dict = {"label": label}
    r = rng.uniform(10.0, 17.0)
    p["radius"] = r
    p["cx"] = rng.uniform(r + 1, SIZE - r - 1)
    p["cy"] = rng.uniform(r + 1, SIZE - r - 1)
    p["angle"] = rng.uniform(0, 2 * math.pi)
    # background: two-colour gradient plus a texture
    b1, b2 = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    p["bg"] = (b1, b2, rng.uniform(0, 2 * math.pi))
    p["bg_tex"] = _texture_params(rng, amp=(0.1, 0.35))
    bg_mean = (b1 + b2) / 2
    # object colours, far enough from the background's mean colour
    for _ in range(100):
        f1 = rng.uniform(0, 1, 3)
        if np.linalg.norm(f1 - bg_mean) > 0.45:
            break
    f2 = np.clip(f1 + rng.normal(0, 0.25, 3), 0, 1)
    p["fg"] = (f1, f2)
    p["fg_tex"] = _texture_params(rng, amp=(0.3, 0.8))
    # clutter: segments and blobs behind the object
    clutter = []
    for _ in range(int(rng.integers(3, 8))):
        kind = "seg" if rng.uniform() < 0.6 else "blob"
        x0, y0 = rng.uniform(0, SIZE, 2)
        if kind == "seg":
            ln, a = rng.uniform(6, 20), rng.uniform(0, 2 * math.pi)
            geom = (x0, y0, x0 + ln * math.cos(a), y0 + ln * math.sin(a), rng.uniform(0.6, 1.4))
        else:
            geom = (x0, y0, rng.uniform(1.5, 3.5))
        clutter.append((kind, geom, rng.uniform(0, 1, 3)))
    p["clutter"] = clutter
    p["noise_seed"] = int(rng.integers(0, 2**31 - 1))
    p["noise_std"] = rng.uniform(0.0, 0.03)
    return p


def _texture_params(rng: np.random.Generator, amp: tuple[float, float]) -> dict:
    kind = int(rng.integers(0, 3))  # 0 stripes, 1 checker, 2 smooth noise
    return {
        "kind": kind,
        "freq": rng.uniform(0.08, 0.35),
        "angle": rng.uniform(0, math.pi),
        "phase": rng.uniform(0, 2 * math.pi),
        "amp": rng.uniform(*amp),
        "noise": rng.uniform(0, 1, (8, 8)).astype(np.float32),
    }


def _texture(t: dict, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Pattern in [0, 1] on pixel coordinates ``xs, ys`` (H, W)."""
    if t["kind"] == 2:
        g = torch.from_numpy(t["noise"])[None, None]
        return F.interpolate(g, size=xs.shape, mode="bicubic", align_corners=False)[0, 0].clamp(0, 1)
    w = 2 * math.pi * t["freq"]
    ca, sa = math.cos(t["angle"]), math.sin(t["angle"])
    u = xs * ca + ys * sa
    if t["kind"] == 0:
        return 0.5 + 0.5 * torch.sin(w * u + t["phase"])
    v = -xs * sa + ys * ca
    return 0.5 + 0.5 * torch.sign(torch.sin(w * u + t["phase"]) * torch.sin(w * v))


def _regular_polygon(rho, phi, n: int):
    sector = 2 * math.pi / n
    return rho <= math.cos(math.pi / n) / torch.cos(torch.remainder(phi, sector) - sector / 2)


def _star(rho, phi, points: int = 5, inner: float = 0.45):
    m = 2 * points
    sector = 2 * math.pi / m
    k = torch.floor(torch.remainder(phi, 2 * math.pi) / sector)
    a0, a1 = k * sector, (k + 1) * sector
    r0 = torch.where(torch.remainder(k, 2) == 0, torch.ones_like(k), torch.full_like(k, inner))
    r1 = torch.where(torch.remainder(k, 2) == 0, torch.full_like(k, inner), torch.ones_like(k))
    p0x, p0y = r0 * torch.cos(a0), r0 * torch.sin(a0)
    ex, ey = r1 * torch.cos(a1) - p0x, r1 * torch.sin(a1) - p0y
    dx, dy = torch.cos(phi), torch.sin(phi)
    t = (p0x * ey - p0y * ex) / (dx * ey - dy * ex)
    return rho <= t


def shape_membership(label: int, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Boolean membership of local coordinates ``(u, v)`` (unit = object radius) in a class shape."""
    rho = torch.sqrt(u * u + v * v)
    phi = torch.atan2(v, u)
    name = CLASSES[label]
    if name == "circle":
        return rho <= 1
    if name == "ellipse":
        return u * u + (v / 0.6) ** 2 <= 1
    if name == "triangle":  # slightly larger, so its area is closer to the others'
        return _regular_polygon(rho / 1.15, phi, 3)
    if name in ("square", "pentagon", "hexagon"):
        n = {"square": 4, "pentagon": 5, "hexagon": 6}[name]
        return _regular_polygon(rho, phi, n)
    if name == "star":
        return _star(rho, phi, inner=0.5)
    if name == "cross":
        w = 0.38
        return ((u.abs() <= w) & (v.abs() <= 1)) | ((v.abs() <= w) & (u.abs() <= 1))
    if name == "rhombus":  # diagonals 2 and 1.2
        return u.abs() + v.abs() / 0.6 <= 1
    if name == "half-disk":  # centred on its centroid (4/(3π) from the flat side)
        uc = u + 4 / (3 * math.pi)
        return (uc * uc + v * v <= 1) & (uc >= 0)
    raise ValueError(f"unknown shape class {label}")


def _coverage(fn, ss: int = _SS) -> torch.Tensor:
    """Fraction of each pixel covered by the region ``fn(xs, ys)`` (supersampled)."""
    off = (torch.arange(ss, dtype=torch.float32) + 0.5) / ss
    grid = torch.arange(SIZE, dtype=torch.float32)
    fine = (grid[:, None] + off[None, :]).reshape(-1)  # SIZE*ss sample positions
    ys, xs = torch.meshgrid(fine, fine, indexing="ij")
    inside = fn(xs, ys).float()
    return F.avg_pool2d(inside[None, None], ss)[0, 0]


def _render(p: dict) -> tuple[torch.Tensor, torch.Tensor]:
    grid = torch.arange(SIZE, dtype=torch.float32) + 0.5
    ys, xs = torch.meshgrid(grid, grid, indexing="ij")
    # background
    b1, b2, ba = p["bg"]
    ramp = ((xs - SIZE / 2) * math.cos(ba) + (ys - SIZE / 2) * math.sin(ba)) / SIZE + 0.5
    ramp = ramp.clamp(0, 1)[None]
    b1t, b2t = torch.tensor(b1, dtype=torch.float32)[:, None, None], torch.tensor(
        b2, dtype=torch.float32
    )[:, None, None]
    img = b1t * (1 - ramp) + b2t * ramp
    tb = _texture(p["bg_tex"], xs, ys)[None]
    img = img * (1 - p["bg_tex"]["amp"] * tb) + p["bg_tex"]["amp"] * tb * (1 - img)
    # clutter
    for kind, geom, col in p["clutter"]:
        if kind == "seg":
            x0, y0, x1, y1, w = geom

            def fn(x, y, x0=x0, y0=y0, x1=x1, y1=y1, w=w):
                ex, ey = x1 - x0, y1 - y0
                t = (((x - x0) * ex + (y - y0) * ey) / (ex * ex + ey * ey)).clamp(0, 1)
                return (x - x0 - t * ex) ** 2 + (y - y0 - t * ey) ** 2 <= (w / 2) ** 2
        else:
            x0, y0, rad = geom

            def fn(x, y, x0=x0, y0=y0, rad=rad):
                return (x - x0) ** 2 + (y - y0) ** 2 <= rad * rad

        a = _coverage(fn)[None]
        img = img * (1 - a) + torch.tensor(col, dtype=torch.float32)[:, None, None] * a
    # object
    ca, sa, r = math.cos(p["angle"]), math.sin(p["angle"]), p["radius"]

    def obj(x, y):
        dx, dy = x - p["cx"], y - p["cy"]
        return shape_membership(p["label"], (dx * ca + dy * sa) / r, (-dx * sa + dy * ca) / r)

    alpha = _coverage(obj)[None]
    f1, f2 = (torch.tensor(c, dtype=torch.float32)[:, None, None] for c in p["fg"])
    tf = _texture(p["fg_tex"], xs, ys)[None] * p["fg_tex"]["amp"]
    fg = f1 * (1 - tf) + f2 * tf
    img = img * (1 - alpha) + fg * alpha
    gen = torch.Generator().manual_seed(p["noise_seed"])
    img = img + p["noise_std"] * torch.randn(img.shape, generator=gen)
    return img.clamp(0, 1), (alpha > 0.5).float()


def example(index: int, split: str = "test", seed: int = 0) -> tuple[torch.Tensor, int, torch.Tensor]:
    """One example: image (3, 64, 64) in [0, 1], label, mask (1, 64, 64) in {0, 1}."""
    rng = np.random.default_rng([seed, SPLITS[split], index])
    label = int(rng.integers(0, NUM_CLASSES))
    img, mask = _render(_example_params(rng, label))
    return img, label, mask


def shapes(
    n: int = 64, split: str = "test", seed: int = 0, start: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Generate ``n`` examples of the shapes benchmark.

    Returns ``(images, labels, masks)``: images ``(n, 3, 64, 64)`` float32 in ``[0, 1]``,
    labels ``(n,)`` int64 in ``[0, 10)``, masks ``(n, 1, 64, 64)`` float32 in ``{0, 1}``
    (1 on the object). Examples ``start .. start+n-1`` of ``split`` (``"train"``, ``"test"``
    or ``"val"``) under ``seed``; each example depends only on ``(seed, split, index)``.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLITS)}")
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    imgs, labels, masks = [], [], []
    for i in range(start, start + n):
        img, lab, m = example(i, split, seed)
        imgs.append(img)
        labels.append(lab)
        masks.append(m)
    if n == 0:
        return (torch.zeros(0, 3, SIZE, SIZE), torch.zeros(0, dtype=torch.long), torch.zeros(0, 1, SIZE, SIZE))
    return torch.stack(imgs), torch.tensor(labels, dtype=torch.long), torch.stack(masks)
