"""How batches reach the model: the training and evaluation loaders of
:class:`~natmu_lightning.data.ForgetRemainDataModule` and its transfer hooks, which finish
each training batch on its device (:mod:`natmu_lightning.data.transfer`)."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.accelerators import CUDAAccelerator
from torch import Tensor
from torch.utils.data import DataLoader

from natmu_lightning.data.contracts import TrainingNeeds
from natmu_lightning.data.resident import ResidentImages
from natmu_lightning.data.sources import SourceData
from natmu_lightning.data.streams import (
    LAYOUT_STREAMS,
    Batch,
    BatchLayout,
    EpochShuffleSampler,
    EvalSplit,
    ForgetThenRemainLayout,
    LayoutBatches,
    LayoutSampler,
    PairedLayout,
    TrainStream,
    collate_batch,
)
from natmu_lightning.data.transfer import copy_flat_batch, finish_rows, is_training_batch, split_rows
from natmu_lightning.data.transforms import to_unit_float
from natmu_lightning.natmu import HybridBatches
from natmu_lightning.records import PreviousRequest


class StreamLoaders(pl.LightningDataModule):
    """The loader and batch-transfer hooks of :class:`~natmu_lightning.data.ForgetRemainDataModule`
    (its one subclass), apart from the splits they read; the attributes below are the
    datamodule's, set by its constructor, ``setup`` and ``prepare_for``."""

    batch_size: int
    eval_batch_size: int
    num_workers: int
    seed: int
    crop_padding: int
    horizontal_flip: bool
    pin_memory: bool | None
    stream: str | None
    needs: TrainingNeeds | None
    hybrids: HybridBatches | None
    resident: ResidentImages | None
    previous_request: PreviousRequest | None
    _resumed_epoch: int | None

    def _loaded(self) -> SourceData:
        raise NotImplementedError

    def _resolved_indices(self) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def prepare_for(self, stage: str, needs: TrainingNeeds | None, model: Any) -> None:
        raise NotImplementedError

    @property
    def hybrid_plan(self) -> dict[str, Tensor] | None:
        """The hybrid stream's plan (:class:`~natmu_lightning.natmu.HybridBatches`), once drawn, while
        this datamodule trains that stream: a plan an earlier fit drew stays out of a fit of another."""
        return self.hybrids.plan if self.hybrids is not None and self.stream == "hybrid" else None

    def train_dataloader(self) -> DataLoader:
        data = self._loaded()
        if self.stream is None:  # a module that did not hand over its needs: the constructor's stream
            self.prepare_for("fit", None, None)
        forget_mask = torch.zeros(data.train.targets.numel(), dtype=torch.bool)
        forget_mask[self._resolved_indices()[0]] = True
        stream = TrainStream(
            data.train.images,
            data.train.targets,
            self._stream_indices(),
            self.hybrid_plan,
            forget_mask,
            not self.resident,
        )
        trainer = self.trainer
        if self.stream in LAYOUT_STREAMS:
            rank, world_size = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
            batches = LayoutBatches(stream, self._layout(), rank, world_size)
            epoch = trainer.current_epoch if trainer is not None else 0
            return self._loader(batches, None, sampler=LayoutSampler(batches, epoch), training=True)
        sampler = EpochShuffleSampler(len(stream), self.seed, self._loader_epoch())
        return self._loader(stream, self.batch_size, sampler=sampler, training=True)

    def _stream_indices(self) -> Tensor:
        """The plain rows of the training stream (the hybrid stream appends its plan's rows)."""
        forget_indices, remain_indices = self._resolved_indices()
        if self.stream == "full":  # every sample still in the training set (all of them for a first request)
            if self.previous_request is None:
                return torch.arange(self._loaded().train.targets.numel())
            return torch.cat([forget_indices, remain_indices]).sort().values
        if self.stream == "forget":
            return forget_indices
        if self.stream in ("both", *LAYOUT_STREAMS):
            return torch.cat([remain_indices, forget_indices])
        return remain_indices

    def _loader_epoch(self) -> int:
        """The epoch a training loader built now serves first.

        Lightning draws from the training loader as soon as it builds it (DataLoader workers
        prefetch at once) and calls ``set_epoch`` only later, keeping that first iterator for
        the first epoch it runs. A resumed fit's loader may even be built before its loops are
        restored (when ``configure_optimizers`` asks for ``estimated_stepping_batches``, as the
        per-step schedules do). So the sampler gets its epoch at construction: the fit loop's
        ``processed`` epochs (the value Lightning later passes to ``set_epoch``), or, until the
        loops are restored, the one the checkpoint recorded (:meth:`state_dict`). Without this
        a fit resumed with workers replays epoch 0's order. (A checkpoint written mid-epoch at
        the very last batch, or before this state existed, still resumes with the earlier
        epoch's order.)
        """
        epoch = 0
        if self.trainer is not None:
            epoch = self.trainer.fit_loop.epoch_progress.current.processed  # type: ignore[attr-defined]
        if self._resumed_epoch is not None:
            epoch, self._resumed_epoch = max(epoch, self._resumed_epoch), None
        return epoch

    def teardown(self, stage: str) -> None:
        if stage == "fit":  # a resumed fit that built no training loader must not pass its epoch on
            self._resumed_epoch = None
            self.resident = None  # the device copy of the training images goes with the fit

    def _layout(self) -> BatchLayout:
        """The batch layout of a ``forget_then_remain`` or ``paired`` stream, sized by the module."""
        needs = self.needs
        forget_batch_size = (needs.forget_batch_size if needs is not None else None) or self.batch_size
        forget_indices, remain_indices = self._resolved_indices()
        sizes = (remain_indices.numel(), forget_indices.numel(), self.batch_size, int(forget_batch_size), self.seed)
        if self.stream == "paired":
            return PairedLayout(*sizes)
        return ForgetThenRemainLayout(*sizes, max_phase_epochs=needs.max_phase_epochs if needs is not None else None)

    def val_dataloader(self) -> DataLoader:
        """The test split: Lightning's own validation loop reports ``val/acc`` on it."""
        return self.test_dataloader()

    def test_dataloader(self) -> DataLoader:
        test = self._loaded().test
        return self._loader(
            EvalSplit(test.images, test.targets, torch.arange(test.targets.numel())), self.eval_batch_size
        )

    def _loader(self, dataset, batch_size: int | None, sampler=None, training: bool = False) -> DataLoader:
        indices_only = training and self.resident is not None  # a few index tensors per batch: no workers, no pinning
        workers = 0 if indices_only else self.num_workers
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=workers,
            collate_fn=collate_batch,  # type: ignore[arg-type]  # whole batches come from __getitems__
            persistent_workers=workers > 0,
            pin_memory=self._pins_memory() and not indices_only,
        )

    def _pins_memory(self) -> bool:
        """``pin_memory``, or by default: pinned batches exactly when training on CUDA (then
        Lightning copies them with ``non_blocking=True``). Batches stay uint8 until the device."""
        if self.pin_memory is not None:
            return self.pin_memory
        return self.trainer is not None and isinstance(self.trainer.accelerator, CUDAAccelerator)

    # ------------------------------------------------------------------ per-batch work
    def on_before_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        """On the CPU, before the copy: the rows to augment and mix, and the augmentation seed
        (:func:`~natmu_lightning.data.transfer.split_rows`)."""
        if not is_training_batch(batch):
            return batch
        return split_rows(batch, self.seed, self._current_epoch(), self._pins_memory())

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """This datamodule's flat batches copied key by key (:func:`~natmu_lightning.data.transfer.copy_flat_batch`)."""
        copied = copy_flat_batch(batch, device)
        return copied if copied is not None else super().transfer_batch_to_device(batch, device, dataloader_idx)

    def on_after_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        """Mix hybrids and augment remaining images on the batch's device; images -> float."""
        if not is_training_batch(batch):
            return {**batch, "image": self._float_images(batch["image"])} if isinstance(batch, dict) else batch
        if "augment_seed" not in batch:  # called directly, without the transfer hooks' first half
            batch = self.on_before_batch_transfer(batch, dataloader_idx)
        rest, images = finish_rows(batch, self.resident, self.crop_padding, self.horizontal_flip, self.hybrids)
        return {**rest, "image": self._float_images(images)}

    def _current_epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def _float_images(self, images: Tensor) -> Tensor:
        """uint8 -> float32 in [0, 1], then the dtype the trainer's precision feeds the model.

        Lightning converts a batch's floats for ``16-true`` / ``bf16-true`` / ``64-true``
        BEFORE the transfer hooks, when the images are still uint8; so the cast happens here,
        after mixing and augmentation (``*-mixed`` precisions keep float32 inputs).
        """
        floats = to_unit_float(images)
        return self.trainer.precision_plugin.convert_input(floats) if self.trainer is not None else floats
