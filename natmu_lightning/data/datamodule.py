"""``ForgetRemainDataModule``: forget / remaining / test splits and the training streams."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch
from pytorch_lightning.accelerators import CUDAAccelerator
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn

from natmu_lightning.data import resolution
from natmu_lightning.data.contracts import TrainingNeeds, training_stream
from natmu_lightning.data.loaders import StreamLoaders
from natmu_lightning.data.requests import ForgetRequest, RandomForget, resolve_excluding
from natmu_lightning.data.resident import RESIDENT_MEMORY_FRACTION, ResidentImages, use_device_resident
from natmu_lightning.data.sources import DataSource, Digits, SourceData
from natmu_lightning.data.streams import (
    LAYOUT_STREAMS,
    STREAMS,
    Stream,
)
from natmu_lightning.images import Images
from natmu_lightning.io import atomic_save_npy, atomic_save_npz, run_dir
from natmu_lightning.natmu import HybridBatches, HybridOptions
from natmu_lightning.records import (
    ALREADY_FORGOTTEN_FILENAME,
    FORGET_INDICES_FILENAME,
    PreviousRequest,
    load_previous_request,
)


class ForgetRemainDataModule(StreamLoaders):
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
    ``batch_size``) sizes the forget batches and ``max_phase_epochs``
    (``forget_then_remain`` only; default: every epoch) says how many leading epochs hold
    the forget pass. Shuffling depends only on ``(seed, epoch)``.

    NatMU's hybrid rows are :class:`~natmu_lightning.natmu.HybridBatches`: planned in
    :meth:`prepare_for` from the seed and the predictions of the model the method hands over
    (the original weights: ``NatMUModule`` calls it from its ``setup``, before any training
    step), mixed per batch on the batch's device in :meth:`on_after_batch_transfer`
    (:mod:`natmu_lightning.data.transfer`). Remaining images get random crop (and flip)
    augmentation there; hybrids get none. The resolved forget set and the plan are saved to
    the run's log dir as ``forget_indices.npy`` and ``hybrid_plan.npz``.

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
        stream: training stream; ``None``: the one the method declares (another one overrides it, with a warning).
        batch_size: training batch size per device.
        eval_batch_size: batch size of evaluation passes.
        num_workers: data-loader workers.
        seed: seed of the forget set and of the hybrid plan.
        natmu: NatMU's hybrids (:class:`~natmu_lightning.natmu.HybridOptions`: ``k`` and
            ``delta``); a mapping of the fields that differ from the defaults works too. Only
            the ``hybrid`` stream reads them.
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
        self.requested_stream = stream
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.seed, self.natmu = seed, HybridOptions.read(natmu)  # a mapping from Python or a checkpoint works too
        self.crop_padding, self.horizontal_flip, self.pin_memory = crop_padding, horizontal_flip, pin_memory
        self.device_resident, self.resident_memory_fraction = device_resident, resident_memory_fraction
        self.previous_record = previous_record
        # Read (and checked) now: a bad record fails before any data is loaded or written.
        self.previous_request: PreviousRequest | None = (
            load_previous_request(previous_record) if previous_record is not None else None
        )
        self.saved_files: dict[str, Path] = {}
        self.data: SourceData | None = None
        self.forget_indices: Tensor | None = None
        self.remain_indices: Tensor | None = None
        self.stream: str | None = None
        self.needs: TrainingNeeds | None = None
        self.hybrids: HybridBatches | None = None
        self.resident: ResidentImages | None = None
        self._resumed_epoch: int | None = None
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
        self.needs, self.stream = needs, self._resolve_stream(needs)
        self._place_training_images(self._loaded())
        if self.stream == "hybrid" and self.hybrid_plan is None:
            self._plan_hybrids(model)
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
        data = self._loaded()
        already = resolution.already_forgotten(self.previous_request, data.train.targets.numel())
        losses = resolution.original_losses(needs, model, self.eval_batch_size)
        forget_indices = resolve_excluding(self.forget, data, self.seed, losses, already)
        keep = torch.ones(data.train.targets.numel(), dtype=torch.bool)
        keep[forget_indices] = False
        keep[already] = False
        self.forget_indices, self.remain_indices = forget_indices, torch.nonzero(keep).flatten()
        self._save(FORGET_INDICES_FILENAME, lambda path: atomic_save_npy(path, forget_indices.numpy()))
        if self.previous_request is not None:
            self._save(ALREADY_FORGOTTEN_FILENAME, lambda path: atomic_save_npy(path, already.numpy()))
        earlier = f" ({already.numel()} forgotten by earlier requests)" if already.numel() else ""
        rank_zero_info(
            f"Forget request {self.forget.describe()}: {forget_indices.numel()} forget, "
            f"{self.remain_indices.numel()} remaining{earlier}, {data.test.targets.numel()} test samples"
        )

    def _plan_hybrids(self, model: nn.Module | None) -> None:
        """Draw NatMU's hybrid plan with the original ``model`` and save it with a few examples."""
        if model is None:
            raise ValueError(
                "planning hybrids needs the original model: train a module that hands it over "
                "(NatMUModule), or, from your LightningModule's setup, call "
                "self.trainer.datamodule.prepare_for(stage, TrainingNeeds('hybrid', original_ckpt), self)"
            )
        data, (forget_indices, remain_indices) = self._loaded(), self._resolved_indices()
        hybrids = HybridBatches(self.natmu, self.seed)
        train = data.train
        hybrids.draw_plan(
            model, train.images, train.targets, forget_indices, remain_indices, self.num_classes, self.eval_batch_size
        )
        self.hybrids = hybrids
        self._save("hybrid_plan.npz", lambda path: atomic_save_npz(path, hybrids.plan_arrays()))
        examples = hybrids.examples(train.images, train.targets, data.classes)
        self._save("hybrid_examples.npz", lambda path: atomic_save_npz(path, examples))

    def _place_training_images(self, data: SourceData) -> None:
        """Decide, before any training, whether the training images live on the device."""
        on_cuda = self.trainer is not None and isinstance(self.trainer.accelerator, CUDAAccelerator)
        resident = use_device_resident(self.device_resident, data.train.images, on_cuda, self.resident_memory_fraction)
        self.resident = ResidentImages(cast(Tensor, data.train.images)) if resident else None
        if resident and on_cuda:
            rank_zero_info("Training images kept on the device (device_resident; turn off with device_resident: false)")

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

    def _resolve_stream(self, needs: TrainingNeeds | None) -> str:
        if needs is not None and needs.unlearns and self.requested_stream not in (None, needs.stream):
            rank_zero_warn(f"data.stream {self.requested_stream!r} overrides the method's {needs.stream!r} stream")
        stream = training_stream(self.requested_stream, needs)
        if stream not in STREAMS:
            raise ValueError(
                f"ForgetRemainDataModule cannot tell which training stream to build: pass stream= one of "
                f"{STREAMS}, or hand the needs over with prepare_for(stage, TrainingNeeds(...), model) from the "
                f"module's setup, as the package's modules do (got {stream!r})"
            )
        return stream

    def _save(self, name: str, write: Callable[[Path], object]) -> None:
        if self.trainer is None:
            return
        folder = run_dir(self.trainer)  # on every rank: trainer.log_dir is a collective under DDP
        self.saved_files[name] = folder / name
        if self.trainer.is_global_zero:
            write(folder / name)

    def evaluation_splits(self) -> dict[str, tuple[Images, Tensor]]:
        """(uint8 images, labels) of each split the evaluator reports
        (:func:`~natmu_lightning.data.resolution.evaluation_splits`).

        The splits are gathered once per resolved request and the same dict is returned on
        every later call (the evaluator runs every epoch): treat it as read-only.
        """
        data = self._loaded()
        if self.forget_indices is None:
            self.setup("validate")
        forget_indices, remain_indices = self._resolved_indices()
        key = (data, forget_indices, remain_indices)
        if self._evaluation_cache is None or not all(a is b for a, b in zip(self._evaluation_cache[0], key)):
            self._evaluation_cache = (
                key,
                resolution.evaluation_splits(data, self.forget, forget_indices, remain_indices),
            )
        return self._evaluation_cache[1]

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict:
        """The resolved forget set and plan, so a resumed run continues on the same ones."""
        state: dict[str, Any] = {"seed": self.seed}
        if self.trainer is not None:
            # the epoch Lightning gives samplers when it resumes from this checkpoint
            state["next_epoch"] = self.trainer.fit_loop.epoch_progress.current.processed  # type: ignore[attr-defined]  # a _ProcessedTracker at run time
        if self.forget_indices is not None:
            state["forget_indices"] = self.forget_indices.clone()
        if self.previous_request is not None:  # with forget_indices: all the model has forgotten
            state["already_forgotten"] = self.previous_request.already_forgotten.clone()
        if self.stream is not None:  # what the fit trained on, which a reference check reads
            state["stream"] = self.stream
        if self.hybrid_plan is not None:
            state["hybrid_plan"] = {k: v.clone() for k, v in self.hybrid_plan.items()}
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the plan when RESUMING a fit, once :func:`~.resolution.check_saved_state` accepts the state."""
        fitting = self.trainer is None or self.trainer.state.fn == "fit"
        resolution.check_saved_state(state_dict, self.forget_indices, self.seed, fitting)
        if not fitting:
            return
        self._resumed_epoch = state_dict.get("next_epoch")
        if "hybrid_plan" in state_dict:
            self.hybrids = self.hybrids or HybridBatches(self.natmu, self.seed)
            self.hybrids.plan = {k: v.clone() for k, v in state_dict["hybrid_plan"].items()}
