"""``UnlearningEvaluator``: forget / remaining / test accuracy and the entropy MIA.

Evaluation is exact under DDP by construction: each split is cut into fixed global
batches of ``batch_size`` samples, batch ``b`` runs on rank ``b % world_size`` through
the LightningModule itself (not the DDP wrapper, no distributed sampler, so no padded
duplicates), and the logits are gathered back into the original order. Every sample
is computed in the same batch whatever the world size, so every rank then holds the
same outputs as a single device and computes the same metrics from them.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor, nn

from natmu_lightning.checkpoints import load_weights
from natmu_lightning.data.transforms import to_unit_float
from natmu_lightning.io import atomic_write_json, run_dir
from natmu_lightning.metrics import functional as MF
from natmu_lightning.predict import eval_mode

LOG_KEYS = {
    "forget_acc": "forget/acc",
    "retain_acc": "retain/acc",
    "test_acc": "test/acc",
    "forget_test_acc": "forget_test/acc",
    "mia_entropy": "mia/entropy",
    "avg_gap": "gap/avg",
}


class UnlearningEvaluator(Callback):
    """Reports forgetting, remaining and test accuracy and the entropy MIA.

    Runs at the end of every ``every_n_epochs``-th training epoch (and always after
    the last one), at the end of ``validate`` and of ``test``. Logs ``forget/acc``,
    ``retain/acc``, ``test/acc`` (``forget_test/acc`` for full-class requests),
    ``mia/entropy`` and, with a reference, ``gap/avg``; writes them to
    ``unlearning_metrics.json`` in the run's log dir. Needs a datamodule with
    ``evaluation_splits()`` (:class:`~natmu_lightning.data.ForgetRemainDataModule`).

    Args:
        reference_ckpt: weights of the Retrain model (same backbone) to compare with;
            its numbers are computed once and reported as ``reference`` with
            ``avg_gap`` (mean |difference| over test, remaining, forget accuracy and MIA).
        every_n_epochs: evaluate every n training epochs.
        batch_size: samples per forward pass (the unit of work split across ranks).
        filename: name of the metrics file in the log dir.
    """

    def __init__(
        self,
        reference_ckpt: Optional[str] = None,
        every_n_epochs: int = 1,
        batch_size: int = 512,
        filename: str = "unlearning_metrics.json",
    ) -> None:
        if every_n_epochs < 1 or batch_size < 1:
            raise ValueError("every_n_epochs and batch_size must be >= 1")
        self.reference_ckpt = reference_ckpt
        self.every_n_epochs, self.batch_size, self.filename = every_n_epochs, batch_size, filename
        self.reference_metrics: Optional[dict[str, float]] = None
        self.last_metrics: Optional[dict[str, Any]] = None
        self._evaluated_step: Optional[int] = None

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.reference_ckpt is not None and self.reference_metrics is None:
            # Fail on a bad reference before any training, not at the first epoch's end.
            load_weights(copy.deepcopy(_backbone(pl_module)), self.reference_ckpt, "reference_ckpt")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        # max_epochs is -1 (unlimited) when only max_steps bounds the run: no epoch is "last"
        # then, and on_fit_end catches the final one.
        last = trainer.max_epochs is not None and trainer.max_epochs > 0 and epoch >= trainer.max_epochs
        if epoch % self.every_n_epochs == 0 or last or trainer.should_stop:
            self._run(trainer, pl_module, "fit", log=True)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._evaluated_step != trainer.global_step:  # stopped by max_steps mid-epoch
            self._run(trainer, pl_module, "fit", log=False)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "validate" and not trainer.sanity_checking:
            self._run(trainer, pl_module, "validate", log=True)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._run(trainer, pl_module, "test", log=True)

    # ------------------------------------------------------------------ work
    def evaluate(self, trainer: pl.Trainer, model: nn.Module) -> dict[str, float]:
        """Metrics of ``model`` on the datamodule's splits, identical on every rank."""
        splits = _splits(trainer)
        probs = {name: sharded_logits(model, images, self.batch_size, trainer).softmax(1) for name, (images, _) in splits.items()}
        labels = {name: targets for name, (_, targets) in splits.items()}
        return split_metrics(probs, labels)

    def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str, log: bool) -> None:
        metrics: dict[str, Any] = self.evaluate(trainer, pl_module)
        if self.reference_ckpt is not None:
            if self.reference_metrics is None:
                reference = copy.deepcopy(_backbone(pl_module))
                load_weights(reference, self.reference_ckpt, "reference_ckpt")
                self.reference_metrics = self.evaluate(trainer, reference)
                del reference
            metrics["avg_gap"] = MF.avg_gap(metrics, self.reference_metrics)
        if log:
            pl_module.log_dict({LOG_KEYS[k]: float(v) for k, v in metrics.items() if k in LOG_KEYS}, sync_dist=False)
        self._evaluated_step = trainer.global_step
        record = {
            **metrics,
            "stage": stage,
            "epoch": trainer.current_epoch,
            "global_step": trainer.global_step,
            "world_size": trainer.world_size,
        }
        if self.reference_metrics is not None:
            record["reference"] = dict(self.reference_metrics)
            record["reference_ckpt"] = str(self.reference_ckpt)
        self.last_metrics = record
        # trainer.log_dir broadcasts from rank 0 (a collective): every rank must ask for it,
        # or rank 0 blocks (or pairs with the next unrelated collective) under DDP.
        folder = run_dir(trainer)
        if trainer.is_global_zero:
            path = atomic_write_json(folder / self.filename, record)
            summary = ", ".join(f"{k}={v:.2f}" for k, v in metrics.items() if isinstance(v, float))
            rank_zero_info(f"[{stage} epoch {trainer.current_epoch}] {summary} -> {path}")


def split_metrics(probs: dict[str, Tensor], labels: dict[str, Tensor]) -> dict[str, float]:
    """Accuracies (percent) of each split and the entropy MIA (remain = member, test = non-member)."""
    metrics = {
        "forget_acc": MF.accuracy(probs["forget"], labels["forget"]),
        "retain_acc": MF.accuracy(probs["remain"], labels["remain"]),
        "test_acc": MF.accuracy(probs["test"], labels["test"]),
        "mia_entropy": MF.mia_entropy(probs["remain"], probs["test"], probs["forget"]),
    }
    if "forget_test" in probs:
        metrics["forget_test_acc"] = MF.accuracy(probs["forget_test"], labels["forget_test"])
    return metrics


def sharded_logits(model: nn.Module, images: Tensor, batch_size: int, trainer: pl.Trainer) -> Tensor:
    """Logits of ``model`` on every image, computed across ranks, in the input's order.

    Global batch ``b`` (images ``b * batch_size`` onwards) runs on rank
    ``b % world_size``; the results are all-gathered with equal shapes (padded rows
    carry position -1) and scattered back, so no sample is counted twice or missed.
    Under DDP this is a collective: every rank must call it with the same images and
    batch size (an empty input returns at once on every rank, without a gather).

    Returns:
        (N, C) float32 logits on the CPU, the same on every rank.
    """
    world, rank = trainer.world_size, trainer.global_rank
    device = trainer.strategy.root_device
    total = images.shape[0]
    if total == 0:  # the same on every rank: nothing to compute or gather
        return torch.zeros(0, _num_classes(model, images, device))
    starts = list(range(0, total, batch_size))[rank::world]
    outputs, positions = [], []
    with eval_mode(model):
        for start in starts:
            stop = min(start + batch_size, total)
            outputs.append(model(to_unit_float(images[start:stop].to(device))).float())
            positions.append(torch.arange(start, stop, device=device))
    num_classes = outputs[0].shape[1] if outputs else _num_classes(model, images, device)
    local = torch.cat(outputs) if outputs else torch.zeros(0, num_classes, device=device)
    local_pos = torch.cat(positions) if positions else torch.zeros(0, dtype=torch.long, device=device)
    if world == 1:
        return local.cpu()
    rows = math.ceil(math.ceil(total / batch_size) / world) * batch_size
    padded = torch.zeros(rows, num_classes, device=device)
    padded[: local.shape[0]] = local
    padded_pos = torch.full((rows,), -1, dtype=torch.long, device=device)
    padded_pos[: local_pos.numel()] = local_pos
    gathered = trainer.strategy.all_gather(padded).reshape(-1, num_classes).cpu()
    gathered_pos = trainer.strategy.all_gather(padded_pos).reshape(-1).cpu()
    valid = gathered_pos >= 0
    result = torch.empty(total, num_classes)
    result[gathered_pos[valid]] = gathered[valid]
    return result


def _num_classes(model: nn.Module, images: Tensor, device: torch.device) -> int:
    """Output width for a rank that holds no batch (it must still join the gather)."""
    probe = torch.zeros(1, *images.shape[1:], device=device)
    with eval_mode(model):
        return int(model(probe).shape[1])


def _backbone(pl_module: pl.LightningModule) -> nn.Module:
    backbone = getattr(pl_module, "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise ValueError("UnlearningEvaluator with reference_ckpt needs a module with a `backbone` attribute")
    return backbone


def _splits(trainer: pl.Trainer) -> dict[str, tuple[Tensor, Tensor]]:
    datamodule = getattr(trainer, "datamodule", None)
    if datamodule is None or not hasattr(datamodule, "evaluation_splits"):
        raise ValueError("UnlearningEvaluator needs a datamodule with evaluation_splits(), e.g. ForgetRemainDataModule")
    return datamodule.evaluation_splits()
