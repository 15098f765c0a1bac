"""What the evaluator runs across DDP ranks: sharded inference, rank 0's buffers and results.

Every function here is a collective under DDP (every rank must call it, in the same order)
and a plain computation on one process.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar, cast

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from natmu_lightning.images import Images, image_batches
from natmu_lightning.predict import eval_mode, model_inputs

T = TypeVar("T")


def sharded_logits(model: nn.Module, images: Images, batch_size: int, trainer: pl.Trainer) -> Tensor:
    """Logits of ``model`` on every image, computed across ranks, in the input's order.

    Global batch ``b`` (images ``b * batch_size`` onwards) runs on rank
    ``b % world_size``, on the model's own device; the results are all-gathered with
    equal shapes (padded rows carry position -1) and scattered back, so no sample is
    counted twice or missed. Under DDP this is a collective: every rank must call it
    with the same images and batch size (an empty input returns at once on every rank,
    without a gather).

    Returns:
        (N, C) float32 logits on the CPU, the same on every rank.
    """
    world, rank = trainer.world_size, trainer.global_rank
    total = images.shape[0]
    if total == 0:  # the same on every rank: nothing to compute or gather
        return torch.zeros(0, _num_classes(model, images))
    starts = list(range(0, total, batch_size))[rank::world]
    outputs, positions = [], []
    with eval_mode(model):
        for start, batch in zip(starts, image_batches(images, batch_size, starts)):
            outputs.append(model(model_inputs(model, batch)).float())
            positions.append(torch.arange(start, min(start + batch_size, total)))
    num_classes = outputs[0].shape[1] if outputs else _num_classes(model, images)
    local = torch.cat(outputs).cpu() if outputs else torch.zeros(0, num_classes)  # one copy back, not one per batch
    local_pos = torch.cat(positions) if positions else torch.zeros(0, dtype=torch.long)
    if world == 1:
        return local
    rows = math.ceil(math.ceil(total / batch_size) / world) * batch_size
    padded = torch.zeros(rows, num_classes)
    padded[: local.shape[0]] = local
    padded_pos = torch.full((rows,), -1, dtype=torch.long)
    padded_pos[: local_pos.numel()] = local_pos
    gathered = _all_gather(trainer, padded).reshape(-1, num_classes)
    gathered_pos = _all_gather(trainer, padded_pos).reshape(-1)
    valid = gathered_pos >= 0
    result = torch.empty(total, num_classes)
    result[gathered_pos[valid]] = gathered[valid]
    return result


def _collective_device(trainer: pl.Trainer) -> torch.device:
    """The device collectives run on: the strategy's (NCCL needs CUDA tensors, gloo CPU ones),
    which may differ from the model's after teardown. Never used for the model's inputs."""
    return trainer.strategy.root_device


def _all_gather(trainer: pl.Trainer, tensor: Tensor) -> Tensor:
    return trainer.strategy.all_gather(tensor.to(_collective_device(trainer))).cpu()


def sync_buffers_from_rank_zero(trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
    """Give every rank rank 0's buffers (batch-norm running statistics) before a fit's evaluation.

    Under DDP the weights are the same on every rank but each rank's last training forward
    updated its own batch-norm statistics; the checkpoint holds rank 0's. Broadcasting them
    makes every evaluation during ``fit`` that of the checkpoint's weights and buffers, and
    changes nothing DDP would not (its ``broadcast_buffers`` copies rank 0's buffers at the
    next training forward). A no-op on one process.
    """
    if trainer.world_size == 1 or not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return
    device = _collective_device(trainer)
    for buffer in pl_module.buffers():
        shared = buffer.detach().to(device)
        torch.distributed.broadcast(shared, src=0)
        buffer.copy_(shared.to(buffer.device))


def on_rank_zero(trainer: pl.Trainer, compute: Callable[[], T]) -> T:
    """``compute()`` on global rank 0 only, its result broadcast to every rank.

    The attacks fit models (logistic regression, SVC, cross-validated classifiers): they
    run once, and every rank reports rank 0's numbers.
    """
    if trainer.world_size == 1:
        return compute()
    result = compute() if trainer.is_global_zero else None
    return cast(T, trainer.strategy.broadcast(result, src=0))


def _num_classes(model: nn.Module, images: Images) -> int:
    """Output width for a rank that holds no batch (it must still join the gather)."""
    with eval_mode(model):
        return int(model(model_inputs(model, torch.zeros(1, *images.shape[1:], dtype=torch.uint8))).shape[1])
