"""Figures: maps side by side (as the paper's Figure 17), transfer heatmaps, summary bars, the audit's curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

ATTACK_TITLES = {"benign": "benign", "target": "target", "pgd": "PGD", "adv2": "ADV²", "stadv": "StAdv",
                 "adv2-stadv": "ADV²-StAdv"}


def _plain(text: str | None) -> str | None:
    """``text`` shown as written by matplotlib (``$`` would start mathtext; user data may hold it)."""
    return None if text is None else str(text).replace("$", r"\$")


def _save(fig, path: str | Path, title: str | None = None) -> Path:
    """Give ``fig`` its ``title``, lay it out, write it as a PNG to ``path`` and close it."""
    if title:
        fig.suptitle(_plain(title), fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def upsample(m: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Maps ``(N, 1, h, w)`` to ``size`` for display (bilinear)."""
    return F.interpolate(m.float(), size=size, mode="bilinear", align_corners=False).clamp(0, 1)


def maps_figure(images: torch.Tensor, maps: dict[str, dict[str, torch.Tensor]], path: str | Path,
                labels: list[str] | None = None, max_rows: int = 6, title: str | None = None) -> Path:
    """Save a grid: rows = examples; columns = image, then per interpreter the benign map and the
    map under each attack, in the order of :data:`ATTACK_TITLES` (``maps[interpreter][attack]``
    are ``(N, 1, h, w)`` in ``[0, 1]``; keys ``benign, target, pgd, adv2, stadv, adv2-stadv``,
    ``target`` only where the target map is not the benign one)."""
    n = min(images.shape[0], max_rows)
    size = tuple(images.shape[-2:])
    cols = [("image", None, None)]
    for interp, per_attack in maps.items():
        for att in ATTACK_TITLES:
            if att in per_attack:
                cols.append((f"{interp}\n{ATTACK_TITLES[att]}", interp, att))
    fig, axes = plt.subplots(n, len(cols), figsize=(1.2 * len(cols), 1.3 * n + 0.5), squeeze=False)
    for r in range(n):
        for c, (head, interp, att) in enumerate(cols):
            ax = axes[r, c]
            if interp is None:
                ax.imshow(images[r].permute(1, 2, 0).cpu().numpy())
                if labels:
                    ax.set_ylabel(_plain(labels[r]), fontsize=7)
            else:
                m = upsample(maps[interp][att][r : r + 1].cpu(), size)[0, 0]
                ax.imshow(m.numpy(), cmap="jet", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(_plain(head), fontsize=8)
    return _save(fig, path, title)


def heatmap(matrix, rows: list[str], cols: list[str], path: str | Path, title: str = "",
            xlabel: str = "", ylabel: str = "", fmt: str = "{:.3f}", cmap: str = "viridis_r",
            vmin: float | None = None, vmax: float | None = None) -> Path:
    """Save ``matrix`` (a list of rows; ``None`` cells blank) as an annotated heatmap PNG
    (colour range ``vmin``…``vmax``, by default the data's)."""
    a = np.array([[np.nan if v is None else float(v) for v in r] for r in matrix], dtype=float)
    fig, ax = plt.subplots(figsize=(1.1 * len(cols) + 2.2, 0.6 * len(rows) + 1.4))
    im = ax.imshow(a, cmap=cmap, aspect="auto", vmin=vmin, vmax=vmax)
    long = max((len(str(c)) for c in cols), default=0) > 10
    ax.set_xticks(range(len(cols)), [_plain(c) for c in cols], fontsize=8, rotation=30 if long else 0,
                  ha="right" if long else "center")
    ax.set_yticks(range(len(rows)), [_plain(r) for r in rows], fontsize=8)
    ax.set_xlabel(xlabel, fontsize=8), ax.set_ylabel(ylabel, fontsize=8)
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            if np.isfinite(a[i, j]):
                r, g, b, _ = im.cmap(im.norm(a[i, j]))
                dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5  # text readable on the cell's colour
                ax.text(j, i, fmt.format(a[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if dark else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    if title:
        ax.set_title(_plain(title), fontsize=9)
    return _save(fig, path)


def summary_figure(rows: list[dict], path: str | Path, title: str = "") -> Path:
    """Bars of ``success_rate`` and ``l1`` per interpreter, one bar per attack (summary rows)."""
    interps = list(dict.fromkeys(r["interpreter"] for r in rows))
    attacks = list(dict.fromkeys(r["attack"] for r in rows))
    by = {(r["attack"], r["interpreter"]): r for r in rows}
    fig, axes = plt.subplots(1, 2, figsize=(max(6.0, 1.4 * len(interps) * 2), 3.0))
    width = 0.8 / max(len(attacks), 1)
    for ax, key, label in ((axes[0], "success_rate", "success rate"), (axes[1], "l1", "L1 to the target map")):
        for k, a in enumerate(attacks):
            vals = [by.get((a, i), {}).get(key) for i in interps]
            ax.bar(np.arange(len(interps)) + k * width, [np.nan if v is None else v for v in vals], width,
                   label=ATTACK_TITLES.get(a, a))
        ax.set_xticks(np.arange(len(interps)) + width * (len(attacks) - 1) / 2, interps, fontsize=8)
        ax.set_ylabel(label, fontsize=8)
    axes[0].set_ylim(0, 1.05)
    axes[1].legend(fontsize=7)
    return _save(fig, path, title)


AUDIT_LABELS = {"adv2": "ADV² (to benign map)", "manipulate": "manipulate (to another image's map)",
                "fragility": "fragility (from benign map)"}


def audit_figure(rows: list[dict], path: str | Path, title: str = "") -> Path:
    """``adv2 audit``: one panel per interpreter, L1 against ε for each objective and for random
    noise, and the L1 between two different images' maps as a dotted line (rows of ``audit.json``)."""
    names = list(dict.fromkeys(r["interpreter"] for r in rows))
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        rs = [r for r in rows if r["interpreter"] == name]
        for obj in dict.fromkeys(r["objective"] for r in rs):
            pts = [(r["eps"] * 255, r["l1"]) for r in rs if r["objective"] == obj and r["l1"] is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=AUDIT_LABELS.get(obj, obj))
        rnd = sorted({(r["eps"] * 255, r["random_l1"]) for r in rs})
        ax.plot(*zip(*rnd, strict=True), marker="x", linestyle="--", color="k", label="random noise (worst of draws)")
        unrelated = next((r.get("unrelated_l1") for r in rs if r.get("unrelated_l1") is not None), None)
        if unrelated is not None:
            ax.axhline(unrelated, color="grey", linestyle=":", label="two different images' maps")
        ax.set_xlabel("ε (×1/255)")
        ax.set_ylabel("L1 between maps")
        ax.set_title(_plain(name), fontsize=10)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(_plain(title), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
