"""The NatMU method's math: gradual masks, the pairing plan and the mixing.

Pure torch (numpy only for the figures' example arrays), no Lightning. See docs/design.md §2
for the definitions restated here.

A *hybrid* mixes a forgetting image ``x_f`` with a real remaining image ``x_r`` of
another class ``c`` and is labelled ``c``. For every forgetting sample the original
model's top-``k`` other classes are chosen (the j-th ranked class uses mask ``j``) and
one remaining image of each is drawn without replacement across the whole plan.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from natmu_lightning.checks import options_from
from natmu_lightning.images import Images

NUM_MASKS = 4
"""How many gradual masks exist (M1..M4), hence the largest supported ``k``."""


def triangle_profile(length: int) -> Tensor:
    """The triangle ``t(i)`` of docs/design.md §2.2 along a side of ``length`` pixels.

    ``b = length / 2``; ``t(i) = i / b`` for ``i < b`` and ``(length - 1 - i) / b``
    otherwise. For odd lengths ``b`` is fractional, which keeps the profile symmetric
    (``t(i) == t(length - 1 - i)``) with its single peak at the centre pixel.

    Args:
        length: side length in pixels (>= 1).

    Returns:
        Float tensor of shape ``(length,)`` with values in ``[0, 1)``.

    Example:
        >>> triangle_profile(4)
        tensor([0.0000, 0.5000, 0.5000, 0.0000])
    """
    if length < 1:
        raise ValueError(f"mask side length must be >= 1, got {length}")
    b = length / 2
    i = torch.arange(length, dtype=torch.float64)
    t = torch.where(i < b, i / b, (length - 1 - i) / b)
    return t.to(torch.float32)


def gradual_masks(height: int, width: int, delta: float = 0.0) -> Tensor:
    """The four gradual masks: how much of the FORGETTING image each pixel keeps.

    ``M1(r, c) = t(r)`` (central horizontal band), ``M2(r, c) = t(c)`` (central
    vertical band), ``M3(r, c) = u(r)`` (top and bottom borders),
    ``M4(r, c) = u(c)`` (left and right borders), with ``u = max(t) - t``; each then
    shifted by ``delta`` and clipped to ``[0, 1]``. For even sides ``max(t)`` is
    ``(b - 1) / b`` exactly as in docs/design.md; for odd sides it is the centre value.

    Args:
        height: image height in pixels.
        width: image width in pixels.
        delta: shift in ``[-1, 1]``; negative keeps less of the forgetting image,
            ``+1`` keeps all of it (plain relabeling), ``-1`` none of it.

    Returns:
        Float tensor of shape ``(4, height, width)`` with values in ``[0, 1]``.

    Example:
        >>> m = gradual_masks(32, 32, 0.0)
        >>> m.shape, round(m[0].mean().item(), 3)
        (torch.Size([4, 32, 32]), 0.469)
        >>> round(gradual_masks(32, 32, -0.19).mean().item(), 3)
        0.303
    """
    validate_delta(delta)
    t_rows, t_cols = triangle_profile(height), triangle_profile(width)
    u_rows, u_cols = t_rows.max() - t_rows, t_cols.max() - t_cols
    masks = torch.stack(
        [
            t_rows[:, None].expand(height, width),
            t_cols[None, :].expand(height, width),
            u_rows[:, None].expand(height, width),
            u_cols[None, :].expand(height, width),
        ]
    )
    return (masks + delta).clamp(0.0, 1.0)


def validate_delta(delta: float) -> None:
    """Raise ``ValueError`` unless ``-1 <= delta <= 1`` (and finite)."""
    if not -1.0 <= float(delta) <= 1.0:
        raise ValueError(f"delta must lie in [-1, 1], got {delta}")


@dataclass(frozen=True)
class HybridOptions:
    """NatMU's own data settings, grouped: how many hybrids, and their masks' shift.

    ``ForgetRemainDataModule(natmu=HybridOptions(...))``, ``data.natmu`` in YAML (``natmu:
    {delta: -0.19}``), ``--data.natmu.delta`` on the command line; only the ``hybrid``
    stream (NatMU) reads them.

    Args:
        k: hybrids per forgetting sample (one per mask, 1 to :data:`NUM_MASKS`).
        delta: mask shift in [-1, 1], the same in every epoch (the paper's).
        delta_end: removed (a linear δ schedule no config used); accepted only as ``None``, so
            that configs saved by 0.2.0 still load. Goes in 0.3.0.
        redraw_plan_every_epoch: removed (the paper draws the plan once); accepted only as
            ``False``, for the same reason. Goes in 0.3.0.

    Example:
        >>> HybridOptions(delta=-0.19).k
        4
    """

    k: int = 4
    delta: float = 0.0
    delta_end: None = None
    redraw_plan_every_epoch: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or not 1 <= self.k <= NUM_MASKS:
            raise ValueError(f"k must lie in [1, {NUM_MASKS}], got {self.k!r}")
        if not isinstance(self.delta, (int, float)) or isinstance(self.delta, bool):
            raise ValueError(
                f"delta must be one number in [-1, 1], got {self.delta!r} (per-epoch δ lists were removed after 0.2.0: "
                "no config used them)"
            )
        validate_delta(self.delta)
        if self.delta_end is not None or self.redraw_plan_every_epoch:
            raise ValueError(
                "natmu.delta_end and natmu.redraw_plan_every_epoch were removed after 0.2.0 (no config used them; the "
                f"paper keeps one δ and draws the plan once): got delta_end={self.delta_end!r}, "
                f"redraw_plan_every_epoch={self.redraw_plan_every_epoch!r}"
            )

    @classmethod
    def read(cls, value: HybridOptions | Mapping[str, object]) -> HybridOptions:
        """``value`` as options: itself, or a mapping of the fields that differ from the defaults.

        Raises:
            ValueError: a field the options do not have.
        """
        return options_from("natmu", value, cls())


def build_hybrid_plan(
    forget_index: Tensor,
    forget_labels: Tensor,
    forget_probs: Tensor,
    remain_index: Tensor,
    remain_labels: Tensor,
    k: int = 4,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Pair every forgetting sample with ``k`` remaining images of other classes.

    The rule (documented choice where the authors' code can loop forever, see
    docs/design.md §2.1):

    1. Each forgetting sample ranks the other classes by the original model's
       probability, descending (ties broken by class id); its own class is never a
       candidate.
    2. Samples are visited in a seeded random order (so no sample is systematically
       favoured). Each takes, for slots ``j = 0..k-1``, the next class in its ranking
       that still has an unused remaining image ("walk down the ranking, skip classes
       that have run out"); slot ``j`` uses mask ``j``.
    3. Images are drawn uniformly within each class, without replacement across the
       whole plan (a seeded permutation of each class's pool, consumed in order).

    The walk visits at most ``C - 1`` classes per slot, so it always terminates; when
    a sample cannot find ``k`` distinct classes with images left a ``ValueError``
    says so.

    Args:
        forget_index: (F,) training-set indices of the forgetting samples.
        forget_labels: (F,) their labels.
        forget_probs: (F, C) the original model's probabilities on them.
        remain_index: (R,) training-set indices of the remaining samples.
        remain_labels: (R,) their labels.
        k: hybrids per forgetting sample, ``1 <= k <= min(4, C - 1)``.
        generator: seeded generator for the visiting order and the draws.

    Returns:
        Mapping of equal-length (F * k,) int64 tensors ``forget_index``,
        ``remain_index``, ``mask_id`` and ``label``, ordered by forgetting sample then
        slot.
    """
    num_forget, num_classes = forget_probs.shape
    if forget_index.numel() != num_forget or forget_labels.numel() != num_forget:
        raise ValueError("forget_index, forget_labels and forget_probs must have the same length")
    validate_k(k, num_classes)
    if num_forget == 0:
        raise ValueError("the forget set is empty: nothing to build hybrids from")

    probs = forget_probs.detach().double().cpu().clone()
    labels = forget_labels.long().cpu()
    probs[torch.arange(num_forget), labels] = -1.0  # the own class ranks last, then is cut
    # Stable descending sort: ties keep the lower class id first.
    ranking = torch.sort(-probs, dim=1, stable=True).indices[:, : num_classes - 1]

    remain_index = remain_index.long().cpu()
    remain_labels = remain_labels.long().cpu()
    pools: list[list[int]] = []
    for c in range(num_classes):
        members = remain_index[remain_labels == c]
        order = torch.randperm(members.numel(), generator=generator)
        pools.append(members[order].tolist())
    next_free = [0] * num_classes

    chosen = torch.empty(num_forget, k, dtype=torch.long)
    drawn = torch.empty(num_forget, k, dtype=torch.long)
    visit_order = torch.randperm(num_forget, generator=generator).tolist()
    ranking_rows = ranking.tolist()
    for row in visit_order:
        slot = 0
        for c in ranking_rows[row]:
            if next_free[c] < len(pools[c]):
                chosen[row, slot] = c
                drawn[row, slot] = pools[c][next_free[c]]
                next_free[c] += 1
                slot += 1
                if slot == k:
                    break
        if slot < k:
            raise ValueError(
                f"cannot build {k} hybrids for forgetting sample {int(forget_index[row])}: only "
                f"{slot} other classes still have unused remaining images; lower k or forget fewer samples"
            )

    return {
        "forget_index": forget_index.long().cpu().repeat_interleave(k),
        "remain_index": drawn.reshape(-1),
        "mask_id": torch.arange(k).repeat(num_forget),
        "label": chosen.reshape(-1),
    }


def validate_k(k: int, num_classes: int) -> None:
    """Raise ``ValueError`` unless ``1 <= k <= min(NUM_MASKS, num_classes - 1)``."""
    limit = min(NUM_MASKS, num_classes - 1)
    if not 1 <= k <= limit:
        raise ValueError(
            f"k={k} hybrids per forgetting sample is not possible: it must lie in [1, {limit}] "
            f"({NUM_MASKS} masks exist and there are {num_classes - 1} other classes)"
        )


def mix(forget_images: Tensor, remain_images: Tensor, weights: Tensor) -> Tensor:
    """Blend in uint8 pixel space: ``floor(clip(x_r * (1 - w) + x_f * w, 0, 255))``.

    Args:
        forget_images: (B, C, H, W) uint8 forgetting images.
        remain_images: (B, C, H, W) uint8 remaining images.
        weights: forgetting-image weights broadcastable to the images, e.g.
            (B, 1, H, W) rows of :func:`gradual_masks`.

    Returns:
        (B, C, H, W) uint8 hybrids on the images' device.

    Example:
        >>> xf = torch.full((1, 1, 2, 2), 200, dtype=torch.uint8)
        >>> xr = torch.zeros((1, 1, 2, 2), dtype=torch.uint8)
        >>> mix(xf, xr, torch.tensor(0.5)).flatten().tolist()
        [100, 100, 100, 100]
    """
    if forget_images.shape != remain_images.shape:
        raise ValueError(f"image shapes differ: {tuple(forget_images.shape)} vs {tuple(remain_images.shape)}")
    w = weights.to(device=forget_images.device, dtype=torch.float32)
    blended = remain_images.float() * (1.0 - w) + forget_images.float() * w
    return blended.clamp(0.0, 255.0).floor().to(torch.uint8)


def plan_examples(
    images: Images, targets: Tensor, plan: Mapping[str, Tensor], k: int, delta: float, num_forget: int = 4
) -> dict[str, np.ndarray]:
    """The first ``num_forget`` forgetting samples' hybrids of ``plan``, for figures.

    Args:
        images: uint8 training images ``(N, C, H, W)`` that the plan's indices address (in
            memory or on disk: only the shown rows are read).
        targets: their labels.
        plan: a plan of :func:`build_hybrid_plan` (``k`` consecutive rows per forgetting sample).
        k: hybrids per forgetting sample.
        delta: the mask shift to draw them with.
        num_forget: how many forgetting samples to show.

    Returns:
        uint8 ``forget``, ``remain`` and ``hybrid`` images (rows x k x C x H x W), their
        ``label``, ``forget_label`` and ``mask_id`` (rows x k), and the ``delta`` used.
    """
    rows = min(num_forget, plan["label"].numel() // k) * k
    xf, xr = images[plan["forget_index"][:rows]], images[plan["remain_index"][:rows]]
    masks = gradual_masks(xf.shape[-2], xf.shape[-1], delta)[plan["mask_id"][:rows]].unsqueeze(1)
    shape = (-1, k, *xf.shape[1:])
    return {
        "forget": xf.reshape(shape).numpy(),
        "remain": xr.reshape(shape).numpy(),
        "hybrid": mix(xf, xr, masks).reshape(shape).numpy(),
        "label": plan["label"][:rows].reshape(-1, k).numpy(),
        "forget_label": targets[plan["forget_index"][:rows]].reshape(-1, k).numpy(),
        "mask_id": plan["mask_id"][:rows].reshape(-1, k).numpy(),
        "delta": np.asarray(delta),
    }
