"""Running a model on uint8 images: where, in which dtype, and in batches.

**The device rule.** Code in this package that runs a model (the hybrid plan, the
hardest-sample losses, the backbone probe, the evaluator, SalUn's saliency, SSD's
importances) asks the model where it is, through :func:`model_device`, and sends its
inputs there through :func:`model_inputs`. It never uses ``strategy.root_device`` or
``LightningModule.device`` for inputs: Lightning runs the ``setup`` hooks before the
strategy moves the module to its accelerator (while ``LightningModule.device`` already
reads as that accelerator), and ``on_fit_end`` after teardown moved the module back to
the CPU. Only collectives (all-gather, broadcast) use the strategy's device, which is the
communication backend's.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from natmu_lightning.images import Images, image_batches


def to_unit_float(images: Tensor) -> Tensor:
    """uint8 images in [0, 255] -> float32 in [0, 1] (models normalise internally)."""
    if images.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {images.dtype}")
    return images.float().div_(255.0)


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (or buffer); the CPU for a stateless model.

    Example:
        >>> model_device(nn.Linear(2, 2))
        device(type='cpu')
    """
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of ``model``'s first floating parameter (float32 when it has none).

    Under Lightning's ``*-mixed`` precisions the weights stay float32 (autocast casts per
    operation inside the training step); under ``16-true`` / ``bf16-true`` / ``64-true``
    they are half / bfloat16 / double, and inputs must match.
    """
    for param in model.parameters():
        if param.is_floating_point():
            return param.dtype
    return torch.float32


def model_inputs(model: nn.Module, images: Tensor) -> Tensor:
    """uint8 ``images`` as floats in [0, 1] on ``model``'s device and in its floating dtype.

    The conversion to [0, 1] happens in float32; only then is the result cast to the
    model's dtype.

    Example:
        >>> model_inputs(nn.Linear(2, 2).double(), torch.tensor([[0, 255]], dtype=torch.uint8))
        tensor([[0., 1.]], dtype=torch.float64)
    """
    return to_unit_float(images.to(model_device(model), non_blocking=True)).to(model_dtype(model))


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


def predict_logits(model: nn.Module, images: Images, batch_size: int = 512) -> Tensor:
    """Logits of ``model`` (eval mode, no augmentation) on uint8 ``images``, on the model's device.

    Args:
        model: any module mapping float images in [0, 1] to logits.
        images: (N, C, H, W) uint8 images (on any device, or on disk: :mod:`natmu_lightning.images`).
        batch_size: images per forward pass.

    Returns:
        (N, num_classes) float32 logits on the CPU.
    """
    outputs = []
    with eval_mode(model):
        for batch in image_batches(images, batch_size):
            outputs.append(model(model_inputs(model, batch)).float().cpu())
    if not outputs:
        return torch.empty(0, 0)
    return torch.cat(outputs)
