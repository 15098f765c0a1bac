"""``ForgetRemainDataModule``: forget / remaining / test splits and on-the-fly hybrids."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final, cast

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.accelerators import CUDAAccelerator
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor, nn
from torch.utils.data import DataLoader

from natmu_lightning import hybrids
from natmu_lightning.data.contracts import TrainingNeeds
from natmu_lightning.data.requests import ForgetRequest, RandomForget, resolve_excluding
from natmu_lightning.data.resident import RESIDENT_MEMORY_FRACTION, ResidentImages, use_device_resident
from natmu_lightning.data.sources import DataSource, Digits, SourceData
from natmu_lightning.data.streams import (
    LAYOUT_STREAMS,
    STREAMS,
    Batch,
    BatchLayout,
    EpochShuffleSampler,
    EvalSplit,
    ForgetThenRemainLayout,
    LayoutBatches,
    LayoutSampler,
    PairedLayout,
    Stream,
    TrainStream,
    collate_batch,
)
from natmu_lightning.data.transforms import augment_seed, random_crop_flip, to_unit_float
from natmu_lightning.hybrids import HybridOptions
from natmu_lightning.images import Images, take
from natmu_lightning.io import atomic_save_npy, atomic_save_npz, run_dir
from natmu_lightning.predict import predict_logits
from natmu_lightning.records import (
    ALREADY_FORGOTTEN_FILENAME,
    FORGET_INDICES_FILENAME,
    PreviousRequest,
    load_previous_request,
)

#: Keys :meth:`ForgetRemainDataModule.on_before_batch_transfer` adds and the second half removes.
PLAIN_ROWS: Final = "plain_rows"
HYBRID_ROWS: Final = "hybrid_rows"
AUGMENT_SEED: Final = "augment_seed"
TRANSFER_KEYS = (PLAIN_ROWS, HYBRID_ROWS, AUGMENT_SEED)


class ForgetRemainDataModule(pl.LightningDataModule):
    """Turns a dataset and a forget request into remaining / forget / test splits.

    The training stream depends on the model being trained:
    ``full`` (the original model: every training sample), ``remain`` (Retrain and
    fine-tuning baselines: the remaining samples only), ``hybrid`` (NatMU: the
    remaining samples plus ``k`` hybrids per forgetting sample), ``forget`` (the
    forget set only, e.g. gradient ascent), ``both`` (remaining and forgetting
    samples in one shuffled stream, flagged by the batch's ``is_forget``),
    ``forget_then_remain`` (SCRUB: a pass over the forget set, then one over the
    remaining set, in separate batches marked by the batch's ``phase``) or ``paired``
    (NegGrad+: every remaining batch followed by a cycled forget batch, the batch's
    ``num_remain`` leading rows being the remaining ones). By default the stream is the one
    the method declares in its :class:`~natmu_lightning.data.TrainingNeeds` (handed over
    through :meth:`prepare_for`); for the last two, its ``forget_batch_size`` (default:
    ``batch_size``) sizes the forget batches and ``forget_pass_epochs``
    (``forget_then_remain`` only; default: every epoch) says how many leading epochs hold
    the forget pass. Shuffling depends only on ``(seed, epoch)``.

    Hybrids are planned in :meth:`prepare_for` from the seed and the predictions of the
    model the method hands over (the original weights: ``NatMUModule`` calls it from its
    ``setup``, before any training step), and mixed per batch on the batch's device in
    :meth:`on_after_batch_transfer`. Remaining images get random crop (and flip)
    augmentation there; hybrids get none. The resolved forget set and the plan are
    saved to the run's log dir as ``forget_indices.npy`` and ``hybrid_plan.npz``.

    A further deletion request on an already-unlearned model names the previous request's
    ``unlearning_record.json`` in ``previous_record``: the samples every earlier request
    forgot (read from the index files the record names, checked against its digests) are
    out of the training set for good. The new request chooses among the others (an
    ``IndexForget`` that lists one of them is refused), they are never remaining images,
    hybrid partners or evaluated, and an unlearning module's ``original_ckpt`` must be a
    checkpoint the previous run wrote. The union is saved as
    ``already_forgotten_indices.npy``. The test split is the request's own: after an earlier
    class request, that class's test images still count in ``test_acc`` (and in the
    attacks' non-members) of later requests.

    Args:
        source: the dataset (default: scikit-learn digits).
        forget: the forget request (default: 10% class-balanced random).
        stream: training stream; ``None``: the one the method declares.
        batch_size: training batch size per device.
        eval_batch_size: batch size of evaluation passes.
        num_workers: data-loader workers.
        seed: seed of the forget set and of the hybrid plan.
        natmu: NatMU's hybrids (:class:`~natmu_lightning.hybrids.HybridOptions`: ``k``,
            ``delta``, ``delta_end``, ``redraw_plan_every_epoch``); a mapping of the fields
            that differ from the defaults works too. Only the ``hybrid`` stream reads them.
        crop_padding: padding of the random crop on remaining images (0 disables).
        horizontal_flip: random horizontal flips on remaining images.
        pin_memory: pin batches in page-locked memory; ``None`` pins exactly when training on CUDA.
        device_resident: keep the training images on the device and gather, mix and augment each
            batch there (no workers, no per-batch image copies; same batches as the loader path,
            :mod:`natmu_lightning.data.resident`). ``None``: on when training on CUDA and the
            uint8 training images fit in ``resident_memory_fraction`` of the free device memory.
        resident_memory_fraction: the share of free device memory the resident images may take.
        previous_record: the previous deletion request's ``unlearning_record.json`` (or its
            run folder), for a further request on the model it produced.

    Example:
        >>> dm = ForgetRemainDataModule(stream="remain")
        >>> dm.setup("fit")
        >>> dm.forget_indices.numel(), dm.remain_indices.numel()
        (130, 1127)
    """

    def __init__(
        self,
        source: DataSource | None = None,
        forget: ForgetRequest | None = None,
        stream: Stream | None = None,
        batch_size: int = 128,
        eval_batch_size: int = 512,
        num_workers: int = 0,
        seed: int = 0,
        natmu: HybridOptions = HybridOptions(),
        crop_padding: int = 4,
        horizontal_flip: bool = True,
        pin_memory: bool | None = None,
        previous_record: str | None = None,
        device_resident: bool | None = None,
        resident_memory_fraction: float = RESIDENT_MEMORY_FRACTION,
    ) -> None:
        super().__init__()
        self.source = source if source is not None else Digits()
        self.forget = forget if forget is not None else RandomForget(0.1)
        if stream is not None and stream not in STREAMS:
            raise ValueError(f"stream must be one of {STREAMS}, got {stream!r}")
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if num_workers < 0 or crop_padding < 0:
            raise ValueError("num_workers and crop_padding must be >= 0")
        if not 0 < resident_memory_fraction <= 1:
            raise ValueError(f"resident_memory_fraction must be in (0, 1], got {resident_memory_fraction!r}")
        natmu = HybridOptions.read(natmu)  # a mapping from Python or a checkpoint works too
        self.requested_stream = stream
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.pin_memory = pin_memory
        self.device_resident, self.resident_memory_fraction = device_resident, resident_memory_fraction
        self.resident: ResidentImages | None = None
        self.seed, self.natmu = seed, natmu
        self.crop_padding, self.horizontal_flip = crop_padding, horizontal_flip
        self.previous_record = previous_record
        # Read (and checked) now: a bad record fails before any data is loaded or written.
        self.previous_request: PreviousRequest | None = (
            load_previous_request(previous_record) if previous_record is not None else None
        )
        self.saved_files: dict[str, Path] = {}

        self.data: SourceData | None = None
        self.forget_indices: Tensor | None = None
        self.remain_indices: Tensor | None = None
        self.hybrid_plan: dict[str, Tensor] | None = None
        self.stream: str | None = None
        self.needs: TrainingNeeds | None = None
        self._forget_probs: Tensor | None = None
        self._plan_epoch = 0
        self._resumed_epoch: int | None = None
        self._mask_cache: dict[tuple, Tensor] = {}
        # (the data, forget and remaining indices they were gathered from, the splits)
        self._evaluation_cache: tuple[tuple[object, ...], dict[str, tuple[Images, Tensor]]] | None = None

    # ------------------------------------------------------------------ properties
    @property
    def train_targets(self) -> Tensor:
        """Label of every training-set sample (index = training-set index)."""
        return self._loaded().train.targets

    @property
    def num_classes(self) -> int:
        return len(self._loaded().classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of the images."""
        return tuple(self._loaded().train.images.shape[1:])  # type: ignore[return-value]

    def _loaded(self) -> SourceData:
        if self.data is None:
            self.data = self.source.load()
        return self.data

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str) -> None:
        """Load the data and resolve the forget request, unless it waits for :meth:`prepare_for`:
        a request that ranks samples by the original model (``HardestForget``) waits for the
        model, and a fit that continues a previous request waits for the method's starting
        checkpoint to be checked, before anything is written."""
        self._loaded()
        if stage == "fit":  # a fit's stream and needs are its own, handed over again by its method
            self.stream, self.needs = None, None
        continues = stage == "fit" and self.previous_request is not None
        if self.forget_indices is None and not self.forget.needs_original_model and not continues:
            self._resolve_request(None, None)

    def prepare_for(self, stage: str, needs: TrainingNeeds | None, model: nn.Module | None) -> None:
        """What a method hands the data, the one way in: its :class:`TrainingNeeds` and, for the
        steps that run a model (ranking the hardest samples, planning NatMU's hybrids), the model
        holding the original weights. The package's modules call it from their ``setup`` (after
        this datamodule's, before any training); the data side never looks the module up.

        For ``fit`` it checks a further request's starting checkpoint, resolves the training
        stream (the ``stream`` argument, else ``needs.stream``), places the training images
        and plans the hybrids. A module that does not call it can still train on a ``stream``
        given to the constructor: the training loader then prepares it without a model.

        Raises:
            ValueError: no stream to build, a plan or a hardest-sample request without a model,
                or a continued request that does not start from the previous result.
        """
        if stage == "fit":
            self.check_continues(needs)
        if self.forget_indices is None:
            self._resolve_request(needs, model)
        if stage != "fit":
            return
        self.needs = needs
        self.stream = self._resolve_stream(needs)
        self._place_training_images(self._loaded())
        if self.stream == "hybrid" and self.hybrid_plan is None:
            hybrids.validate_k(self.natmu.k, self.num_classes)
            if self.trainer is not None:
                hybrids.check_schedule_length(self.natmu.delta, self.trainer.max_epochs)
            self.hybrid_plan = self._draw_plan(epoch=0, model=model)
            self._save(
                "hybrid_plan.npz",
                lambda path: atomic_save_npz(path, {k: v.numpy() for k, v in self.hybrid_plan.items()}),
            )
            self._save("hybrid_examples.npz", lambda path: atomic_save_npz(path, self.hybrid_examples()))
            if self.natmu.redraw_plan_every_epoch and self.trainer is not None:
                # The plan lives in the train dataloader, so it must be rebuilt each epoch.
                self.trainer.reload_dataloaders_every_n_epochs = 1  # type: ignore[attr-defined]
        if self.stream in LAYOUT_STREAMS and self.trainer is not None:
            # An epoch's layout (and so its length) is fixed when its loader is built.
            self.trainer.reload_dataloaders_every_n_epochs = 1  # type: ignore[attr-defined]

    def check_continues(self, needs: TrainingNeeds | None) -> None:
        """A further deletion request's unlearning method must start from the previous result.
        ``prepare_for`` checks it; the CLI also checks it before the fit writes anything.

        Raises:
            ValueError: ``needs.original_ckpt`` is not a checkpoint the previous request's run wrote.
        """
        if self.previous_request is not None and needs is not None and needs.unlearns and needs.original_ckpt:
            self.previous_request.check_original(needs.original_ckpt)

    def _resolve_request(self, needs: TrainingNeeds | None, model: nn.Module | None) -> None:
        """Resolve the forget request into ``forget_indices`` and ``remain_indices`` and save them."""
        data, already = self._loaded(), self._already_forgotten()

        def original_losses(images: Images, targets: Tensor) -> Tensor:
            return self._original_losses(images, targets, needs, model)

        self.forget_indices = resolve_excluding(self.forget, data, self.seed, original_losses, already)
        keep = torch.ones(data.train.targets.numel(), dtype=torch.bool)
        keep[self.forget_indices] = False
        keep[already] = False
        self.remain_indices = torch.nonzero(keep).flatten()
        self._save(FORGET_INDICES_FILENAME, lambda path: atomic_save_npy(path, self.forget_indices.numpy()))
        if self.previous_request is not None:
            self._save(ALREADY_FORGOTTEN_FILENAME, lambda path: atomic_save_npy(path, already.numpy()))
        earlier = f" ({already.numel()} forgotten by earlier requests)" if already.numel() else ""
        rank_zero_info(
            f"Forget request {self.forget.describe()}: {self.forget_indices.numel()} forget, "
            f"{self.remain_indices.numel()} remaining{earlier}, {data.test.targets.numel()} test samples"
        )

    def _place_training_images(self, data: SourceData) -> None:
        """Decide, before any training, whether the training images live on the device."""
        on_cuda = self.trainer is not None and isinstance(self.trainer.accelerator, CUDAAccelerator)
        resident = use_device_resident(self.device_resident, data.train.images, on_cuda, self.resident_memory_fraction)
        self.resident = ResidentImages(cast(Tensor, data.train.images)) if resident else None
        if resident and on_cuda:
            rank_zero_info("Training images kept on the device (device_resident; turn off with device_resident: false)")

    def _already_forgotten(self) -> Tensor:
        """Training indices earlier deletion requests forgot (empty for a first request)."""
        if self.previous_request is None:
            return torch.zeros(0, dtype=torch.long)
        already, total = self.previous_request.already_forgotten, self.train_targets.numel()
        if already.numel() and int(already.max()) >= total:
            raise ValueError(
                f"the previous request's record {self.previous_request.record['path']!r} forgot training index "
                f"{int(already.max())}, but this dataset has {total} training samples: another dataset?"
            )
        return already

    def _resolved_indices(self) -> tuple[Tensor, Tensor]:
        """The forget and remaining indices that ``setup`` resolved."""
        if self.forget_indices is None or self.remain_indices is None:
            if self.forget.needs_original_model:
                raise RuntimeError(
                    f"{self.forget.describe()} is resolved with the original model, which the method hands over in "
                    "its setup (prepare_for(stage, needs, model)): nothing has yet"
                )
            raise RuntimeError("the forget request is not resolved yet: call setup() first")
        return self.forget_indices, self.remain_indices

    def _training_indices(self) -> Tensor:
        """Every training sample still in the training set (all of them for a first request)."""
        if self.previous_request is None:
            return torch.arange(self.train_targets.numel())
        return torch.cat(self._resolved_indices()).sort().values

    def _resolve_stream(self, needs: TrainingNeeds | None) -> str:
        stream = self.requested_stream or (needs.stream if needs is not None else None)
        if stream not in STREAMS:
            raise ValueError(
                f"ForgetRemainDataModule cannot tell which training stream to build: pass stream= one of "
                f"{STREAMS}, or hand the needs over with prepare_for(stage, TrainingNeeds(...), model) from the "
                f"module's setup, as the package's modules do (got {stream!r})"
            )
        return stream

    def _original_losses(
        self, images: Images, targets: Tensor, needs: TrainingNeeds | None, model: nn.Module | None
    ) -> Tensor:
        """Per-sample losses of ``model``, which must hold the original weights: a method hands it
        over before any training step, so a module loaded from ``original_ckpt`` does."""
        if model is None or needs is None or not needs.original_ckpt:
            if model is None or needs is None:
                who = "no model and needs were handed over (prepare_for)"
            else:
                who = f"the {type(model).__name__} being set up has no original_ckpt"
            raise ValueError(
                f"HardestForget ranks samples by the ORIGINAL model's loss, but {who} (it would rank them with "
                "untrained weights): resolve it in a run whose module loads the original weights (e.g. "
                "NatMUModule with original_ckpt), then pass the saved forget_indices.npy to other runs "
                "through IndexForget"
            )
        logits = predict_logits(model, images, self.eval_batch_size)
        return torch.nn.functional.cross_entropy(logits, targets, reduction="none")

    def _draw_plan(self, epoch: int, model: nn.Module | None = None) -> dict[str, Tensor]:
        """The hybrid plan of ``epoch``, from the original model's predictions on the forget
        set (computed once, with ``model``, and kept for later epochs' plans)."""
        data, (forget_indices, remain_indices) = self._loaded(), self._resolved_indices()
        if self._forget_probs is None:
            if model is None:
                raise ValueError(
                    "planning hybrids needs the original model: train a module that hands it over "
                    "(NatMUModule), or, from your LightningModule's setup, call "
                    "self.trainer.datamodule.prepare_for(stage, TrainingNeeds('hybrid', original_ckpt), self)"
                )
            images = take(data.train.images, forget_indices)
            logits = predict_logits(model, images, self.eval_batch_size)
            if logits.shape[1] != self.num_classes:
                raise ValueError(f"the model outputs {logits.shape[1]} classes but the dataset has {self.num_classes}")
            self._forget_probs = logits.softmax(dim=1)
        generator = torch.Generator().manual_seed(self.seed + 1_000_003 * epoch)
        return hybrids.build_hybrid_plan(
            forget_indices,
            data.train.targets[forget_indices],
            self._forget_probs,
            remain_indices,
            data.train.targets[remain_indices],
            k=self.natmu.k,
            generator=generator,
        )

    def _save(self, name: str, write) -> None:
        if self.trainer is None:
            return
        folder = run_dir(self.trainer)  # on every rank: trainer.log_dir is a collective under DDP
        self.saved_files[name] = folder / name
        if self.trainer.is_global_zero:
            write(folder / name)

    def hybrid_examples(self, num_forget: int = 4, epoch: int = 0) -> dict[str, np.ndarray]:
        """The first ``num_forget`` forgetting samples' hybrids, for figures: uint8 ``forget``,
        ``remain`` and ``hybrid`` images (rows x k x C x H x W), ``label``, ``mask_id``,
        ``classes`` and the ``delta`` used."""
        data = self._loaded()
        if self.hybrid_plan is None:
            raise RuntimeError("no hybrid plan yet: call setup('fit') for a hybrid stream first")
        examples = hybrids.plan_examples(
            data.train.images, data.train.targets, self.hybrid_plan, self.natmu.k, self.current_delta(epoch), num_forget
        )
        return {**examples, "classes": np.asarray(data.classes)}

    # ------------------------------------------------------------------ loaders
    def train_dataloader(self) -> DataLoader:
        data = self._loaded()
        if self.stream is None:  # a module that did not hand over its needs: the constructor's stream
            self.prepare_for("fit", None, None)
        plan = None
        forget_indices, remain_indices = self._resolved_indices()
        if self.stream == "full":
            indices = self._training_indices()
        elif self.stream == "forget":
            indices = forget_indices
        elif self.stream in ("both", *LAYOUT_STREAMS):
            indices = torch.cat([remain_indices, forget_indices])
        else:
            indices = remain_indices
        if self.stream == "hybrid":
            epoch = self.trainer.current_epoch if self.trainer is not None else 0
            if self.natmu.redraw_plan_every_epoch and epoch != self._plan_epoch:
                self.hybrid_plan, self._plan_epoch = self._draw_plan(epoch), epoch
                self._save(
                    f"hybrid_plan_epoch{epoch}.npz",
                    lambda path: atomic_save_npz(path, {k: v.numpy() for k, v in self.hybrid_plan.items()}),
                )
            plan = self.hybrid_plan
        forget_mask = torch.zeros(data.train.targets.numel(), dtype=torch.bool)
        forget_mask[self.forget_indices] = True
        stream = TrainStream(data.train.images, data.train.targets, indices, plan, forget_mask, self.resident is None)
        if self.stream in LAYOUT_STREAMS:
            trainer = self.trainer
            rank, world_size = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
            batches = LayoutBatches(stream, self._layout(), rank, world_size)
            epoch = trainer.current_epoch if trainer is not None else 0
            return self._loader(batches, None, sampler=LayoutSampler(batches, epoch), training=True)
        sampler = EpochShuffleSampler(len(stream), self.seed, self._loader_epoch())
        return self._loader(stream, self.batch_size, sampler=sampler, training=True)

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
        return ForgetThenRemainLayout(*sizes, forget_epochs=needs.forget_pass_epochs if needs is not None else None)

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

    def evaluation_splits(self) -> dict[str, tuple[Images, Tensor]]:
        """(uint8 images, labels) of each split the evaluator reports.

        ``forget``, ``remain`` and ``test``; for full-class and sub-class requests ``test``
        holds the test samples outside the forgotten classes (sub-class) and
        ``forget_test`` those inside (the NatMU authors' ``retainDL_inTestSet`` and
        ``forgetDL_inTestSet`` in ``class-wise/natmu.py``).

        The splits are gathered once per resolved request and the same dict is returned on
        every later call (the evaluator runs every epoch): treat it as read-only.
        """
        data = self._loaded()
        if self.forget_indices is None:
            self.setup("validate")
        forget_indices, remain_indices = self._resolved_indices()
        key = (data, forget_indices, remain_indices)
        if self._evaluation_cache is not None and all(a is b for a, b in zip(self._evaluation_cache[0], key)):
            return self._evaluation_cache[1]
        splits = {
            "forget": (take(data.train.images, forget_indices), data.train.targets[forget_indices]),
            "remain": (take(data.train.images, remain_indices), data.train.targets[remain_indices]),
        }
        inside = self.forget.forgotten_test_mask(data)
        if inside is None:
            splits["test"] = (data.test.images, data.test.targets)
        else:
            splits["test"] = (take(data.test.images, ~inside), data.test.targets[~inside])
            splits["forget_test"] = (take(data.test.images, inside), data.test.targets[inside])
        self._evaluation_cache = (key, splits)
        return splits

    # ------------------------------------------------------------------ per-batch work
    def current_delta(self, epoch: int) -> float:
        """The mask shift used in ``epoch`` (constant, per-epoch list, or linear to ``delta_end``)."""
        if self.natmu.delta_end is not None:
            assert isinstance(self.natmu.delta, (int, float))  # __init__ refuses delta_end after a list
            epochs = (self.trainer.max_epochs if self.trainer is not None else None) or 1
            return hybrids.linear_delta_schedule(float(self.natmu.delta), self.natmu.delta_end, max(epochs, 1))[
                min(epoch, max(epochs, 1) - 1)
            ]
        return hybrids.delta_for_epoch(self.natmu.delta, epoch)

    def on_before_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        """On the CPU, before the copy: everything the per-batch work needs to know about the
        batch (which rows to augment, which to mix, the augmentation seed), so that on a GPU
        :meth:`on_after_batch_transfer` never reads the device and never waits for it."""
        if not isinstance(batch, dict) or "mask_id" not in batch:
            return batch
        hybrid = batch["mask_id"].cpu() >= 0
        plain, hybrid_rows = torch.nonzero(~hybrid).flatten(), torch.nonzero(hybrid).flatten()
        if self._pins_memory():  # a pageable host-to-device copy would synchronise the stream
            plain, hybrid_rows = plain.pin_memory(), hybrid_rows.pin_memory()
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        seed = augment_seed(self.seed, epoch, batch["index"].cpu())
        return {**batch, PLAIN_ROWS: plain, HYBRID_ROWS: hybrid_rows, AUGMENT_SEED: seed}

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Copy this datamodule's flat batches key by key, as Lightning's default does (without
        blocking, except to the CPU or MPS), but without its generic walk through the
        collection, which costs about half a millisecond of host time per training step."""
        if not isinstance(batch, dict) or any(isinstance(v, (dict, list, tuple)) for v in batch.values()):
            return super().transfer_batch_to_device(batch, device, dataloader_idx)
        non_blocking = device.type not in ("cpu", "mps")
        return {
            key: value.to(device, non_blocking=non_blocking) if isinstance(value, Tensor) else value
            for key, value in batch.items()
        }

    def on_after_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        """Mix hybrids and augment remaining images on the batch's device; images -> float.

        Rows are selected by index tensors prepared on the CPU (no boolean masks, no ``.any()``),
        so nothing here synchronises with an accelerator."""
        if not isinstance(batch, dict) or "mask_id" not in batch:
            return {**batch, "image": self._float_images(batch["image"])} if isinstance(batch, dict) else batch
        if AUGMENT_SEED not in batch:  # called directly, without the transfer hooks' first half
            batch = self.on_before_batch_transfer(batch, dataloader_idx)
        plain, hybrid = batch[PLAIN_ROWS], batch[HYBRID_ROWS]
        resident = self._resident_images(batch)  # None on the loader path: the batch holds the images
        images = batch["image"] if resident is None else resident[batch["index"]]
        out = images.clone()
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        if plain.numel():
            generator = torch.Generator().manual_seed(batch[AUGMENT_SEED])
            out[plain] = random_crop_flip(images[plain], self.crop_padding, self.horizontal_flip, generator)
        if hybrid.numel():
            masks = self._masks(images.shape[-2], images.shape[-1], self.current_delta(epoch), images.device)
            weights = masks[batch["mask_id"][hybrid]].unsqueeze(1)  # (B_h, 1, H, W)
            partners = batch["partner"][hybrid] if resident is None else resident[batch["partner_index"][hybrid]]
            out[hybrid] = hybrids.mix(images[hybrid], partners, weights)
        dropped = ("partner", "partner_index", *TRANSFER_KEYS)
        unmixed = cast(Batch, {key: value for key, value in batch.items() if key not in dropped})
        return {**unmixed, "image": self._float_images(out)}

    def _resident_images(self, batch: Batch) -> Tensor | None:
        """The device's copy of the training images for a batch of indices (a device-resident
        stream's), or ``None`` for a batch that holds its images (the loader path)."""
        if "image" in batch:
            return None
        if self.resident is None:
            raise RuntimeError("a batch of indices only, but the training images are not device-resident")
        return self.resident.on(batch["index"].device)

    def _float_images(self, images: Tensor) -> Tensor:
        """uint8 -> float32 in [0, 1], then the dtype the trainer's precision feeds the model.

        Lightning converts a batch's floats for ``16-true`` / ``bf16-true`` / ``64-true``
        BEFORE the transfer hooks, when the images are still uint8; so the cast happens here,
        after mixing and augmentation (``*-mixed`` precisions keep float32 inputs).
        """
        floats = to_unit_float(images)
        return self.trainer.precision_plugin.convert_input(floats) if self.trainer is not None else floats

    def _masks(self, height: int, width: int, delta: float, device: torch.device) -> Tensor:
        key = (height, width, delta, str(device))
        if key not in self._mask_cache:
            self._mask_cache[key] = hybrids.gradual_masks(height, width, delta).to(device)
        return self._mask_cache[key]

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict:
        """The resolved forget set and plan, so a resumed run continues on the same ones."""
        state: dict[str, Any] = {"seed": self.seed}
        if self.trainer is not None:
            # the epoch Lightning gives samplers when it resumes from this checkpoint
            state["next_epoch"] = self.trainer.fit_loop.epoch_progress.current.processed  # type: ignore[attr-defined]  # a _ProcessedTracker at run time
        if self.forget_indices is not None:
            state["forget_indices"] = self.forget_indices.clone()
        if self.hybrid_plan is not None:
            state["hybrid_plan"] = {k: v.clone() for k, v in self.hybrid_plan.items()}
            state["plan_epoch"] = self._plan_epoch
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the plan when RESUMING a fit; validating or testing a checkpoint may use any forget set."""
        if self.trainer is not None and self.trainer.state.fn != "fit":
            return
        if "forget_indices" in state_dict and self.forget_indices is not None:
            if not torch.equal(state_dict["forget_indices"], self.forget_indices):
                raise ValueError(
                    "the checkpoint was trained on a different forget set than this configuration resolves"
                )
        self._resumed_epoch = state_dict.get("next_epoch")
        if "hybrid_plan" in state_dict:
            self.hybrid_plan = {k: v.clone() for k, v in state_dict["hybrid_plan"].items()}
            self._plan_epoch = state_dict.get("plan_epoch", 0)
