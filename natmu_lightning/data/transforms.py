"""Batched image transforms that run on whatever device the batch is on."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from natmu_lightning.predict import to_unit_float

__all__ = ["random_crop_flip", "to_device", "to_unit_float"]


def random_crop_flip(
    images: Tensor,
    padding: int,
    horizontal_flip: bool,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Random crop with zero padding plus an optional random horizontal flip, per sample.

    The batched equivalent of torchvision's ``RandomCrop(size, padding)`` followed by
    ``RandomHorizontalFlip()``, without a per-sample Python loop.

    Args:
        images: (B, C, H, W) images of any dtype.
        padding: zero padding on every side before cropping back to (H, W); 0 disables.
        horizontal_flip: flip each image left-right with probability 1/2.
        generator: optional CPU generator for the random parameters (drawn on the CPU,
            then moved to the images' device, so results do not depend on the device).

    Returns:
        Augmented images with the input's shape, dtype and device.
    """
    if images.numel() == 0:
        return images
    batch, _, height, width = images.shape
    device = images.device
    if padding > 0:
        padded = F.pad(images, (padding, padding, padding, padding))
        offsets = to_device(torch.randint(0, 2 * padding + 1, (2, batch), generator=generator), device)
        rows = offsets[0, :, None] + torch.arange(height, device=device)  # (B, H)
        cols = offsets[1, :, None] + torch.arange(width, device=device)  # (B, W)
        batch_index = torch.arange(batch, device=device)[:, None, None]
        # Advanced indexing yields (B, H, W, C); move channels back.
        images = padded.permute(0, 2, 3, 1)[batch_index, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if horizontal_flip:
        flip = to_device(torch.rand(batch, generator=generator) < 0.5, device)
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    return images.contiguous()


def to_device(tensor: Tensor, device: torch.device) -> Tensor:
    """Copy a small CPU tensor to ``device`` without synchronising a CUDA stream (a copy from
    pageable memory would wait for every queued kernel; a pinned one does not)."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def augment_seed(seed: int, epoch: int, index: Tensor) -> int:
    """The seed of one batch's augmentation, from (seed, epoch, the batch's sample indices):
    reproducible on resume and independent of the number of data-loader workers."""
    first = int(index[0]) if index.numel() else 0
    key = (seed * 1_000_003 + epoch) * 1_000_003 + first * 7919 + index.numel()
    return key % (2**63)
