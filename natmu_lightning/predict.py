"""Batched, augmentation-free forward passes used for planning and evaluation."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional

import torch
from torch import Tensor, nn

from natmu_lightning.data.transforms import to_unit_float


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode without gradients, restoring its mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def predict_logits(
    model: nn.Module,
    images: Tensor,
    batch_size: int = 512,
    device: Optional[torch.device] = None,
) -> Tensor:
    """Logits of ``model`` (eval mode, no augmentation) on uint8 ``images``.

    Args:
        model: any module mapping float images in [0, 1] to logits.
        images: (N, C, H, W) uint8 images (on any device).
        batch_size: images per forward pass.
        device: where to run; defaults to the model's first parameter's device.

    Returns:
        (N, num_classes) float32 logits on the CPU.
    """
    if device is None:
        device = next(model.parameters()).device
    outputs = []
    with eval_mode(model):
        for start in range(0, images.shape[0], batch_size):
            batch = to_unit_float(images[start : start + batch_size].to(device, non_blocking=True))
            outputs.append(model(batch).float().cpu())
    if not outputs:
        return torch.empty(0, 0)
    return torch.cat(outputs)


def predict_probs(model: nn.Module, images: Tensor, batch_size: int = 512, device: Optional[torch.device] = None) -> Tensor:
    """Softmax probabilities of :func:`predict_logits`."""
    return predict_logits(model, images, batch_size, device).softmax(dim=1)
