"""Figures: maps side by side, as the paper's Figure 17."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

ATTACK_TITLES = {"benign": "benign", "pgd": "PGD", "adv2": "ADV²", "stadv": "StAdv", "adv2-stadv": "ADV²-StAdv"}


def upsample(m: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Maps ``(N, 1, h, w)`` to ``size`` for display (bilinear)."""
    return F.interpolate(m.float(), size=size, mode="bilinear", align_corners=False).clamp(0, 1)


def maps_figure(images: torch.Tensor, maps: dict[str, dict[str, torch.Tensor]], path: str | Path,
                labels: list[str] | None = None, max_rows: int = 6, title: str | None = None) -> Path:
    """Save a grid: rows = examples; columns = image, then per interpreter the benign map and the
    map under each attack, in the order of :data:`ATTACK_TITLES` (``maps[interpreter][attack]``
    are ``(N, 1, h, w)`` in ``[0, 1]``; attacks ``benign, pgd, adv2, stadv, adv2-stadv``)."""
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
                    ax.set_ylabel(labels[r], fontsize=7)
            else:
                m = upsample(maps[interp][att][r : r + 1].cpu(), size)[0, 0]
                ax.imshow(m.numpy(), cmap="jet", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(head, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
