"""Map-style datasets over uint8 images (in memory or on disk) that fetch whole batches at once.

Both define ``__getitems__`` so a DataLoader gathers a batch with one tensor index
instead of a per-sample Python loop; :func:`collate_batch` passes the result through.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final, Literal, TypedDict, cast

import torch
from torch import Tensor
from torch.utils.data import Dataset, DistributedSampler, Sampler

from natmu_lightning.images import Images


class Batch(TypedDict, total=False):
    """A batch of :class:`~natmu_lightning.data.ForgetRemainDataModule`: named fields, read
    through :func:`batch_fields`. Which fields a batch has depends on its stream."""

    image: Tensor
    """(B, C, H, W) uint8 images (floats in [0, 1] after ``on_after_batch_transfer``)."""
    target: Tensor
    """(B,) labels trained on (a hybrid's label for hybrid rows)."""
    index: Tensor
    """(B,) training-set index of each ``image``."""
    partner: Tensor
    """(K, C, H, W) uint8 remaining images of the batch's K hybrid rows, in row order (the loader
    path of a training stream; a single row's is its own image when it is not a hybrid)."""
    partner_index: Tensor
    """Training-set index of ``partner``: what a device-resident stream gives instead of the
    images (``image`` and ``partner`` are gathered on the device after the transfer)."""
    mask_id: Tensor
    """The hybrid's mask, -1 for plain rows; training streams."""
    is_forget: Tensor
    """A plain row of a forgetting sample; training streams (RL, SalUn, Bad Teacher read it)."""
    phase: str
    """``"forget"`` or ``"remain"``: the ``forget_then_remain`` stream's phase (SCRUB)."""
    num_remain: int
    """Remaining rows first, then forget rows: the ``paired`` stream (NegGrad+)."""
    plain_rows: Tensor
    """Rows to augment, set by ``on_before_batch_transfer``."""
    hybrid_rows: Tensor
    """Rows to mix, set by ``on_before_batch_transfer``."""
    augment_seed: int
    """The batch's augmentation seed, set by ``on_before_batch_transfer``."""


#: The stream that gives each field a module may ask for, for the error when a batch lacks it.
FIELD_SOURCES = {
    "is_forget": "the ForgetRemainDataModule's 'both' stream",
    "phase": "the ForgetRemainDataModule's 'forget_then_remain' stream",
    "num_remain": "the ForgetRemainDataModule's 'paired' stream",
    "index": "a ForgetRemainDataModule stream",
}


def batch_fields(batch: Any, *names: str, user: str) -> tuple[Any, ...]:
    """The fields ``names`` of a batch, in order: the one way modules read batches.

    A plain ``(images, targets)`` pair (any DataLoader's) gives ``image`` and ``target``.

    Raises:
        ValueError: the batch lacks a field; the message names ``user`` and the stream
            that provides it.

    Example:
        >>> batch_fields((torch.zeros(2, 1), torch.ones(2)), "target", user="FTModule")
        (tensor([1., 1.]),)
    """
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        batch = {"image": batch[0], "target": batch[1]}
    missing = [name for name in names if not isinstance(batch, dict) or name not in batch]
    if missing:
        sources = "; ".join(
            f"{name!r} comes from {FIELD_SOURCES.get(name, 'a ForgetRemainDataModule batch')}" for name in missing
        )
        raise ValueError(f"{user} trains on batches with {missing}, and got a batch without them ({sources})")
    return tuple(batch[name] for name in names)


#: The training streams a ``ForgetRemainDataModule`` builds (its class docstring says which is which).
Stream = Literal["full", "remain", "hybrid", "forget", "both", "forget_then_remain", "paired"]
STREAMS = ("full", "remain", "hybrid", "forget", "both", "forget_then_remain", "paired")
#: Streams made of whole batches laid out per epoch (see :class:`BatchLayout`).
LAYOUT_STREAMS = ("forget_then_remain", "paired")


def collate_batch(batch: Batch) -> Batch:
    """The batch is already assembled by ``__getitems__``; a named function so workers can pickle it."""
    return batch


class EvalSplit(Dataset):
    """Samples ``indices`` of ``images`` with their labels: ``image`` (uint8), ``target``, ``index``."""

    def __init__(self, images: Images, targets: Tensor, indices: Tensor) -> None:
        self.images, self.targets, self.indices = images, targets, indices.long()

    def __len__(self) -> int:
        return self.indices.numel()

    def __getitems__(self, positions: Sequence[int]) -> Batch:
        index = self.indices[torch.as_tensor(positions, dtype=torch.long)]
        return {"image": self.images[index], "target": self.targets[index], "index": index}

    def __getitem__(self, position: int) -> Batch:
        return cast(Batch, {key: value[0] for key, value in cast(dict, self.__getitems__([position])).items()})


class TrainStream(Dataset):
    """One stream over the remaining samples followed by the hybrid rows of a plan.

    A row yields ``image`` (the remaining image, or the FORGETTING image of a hybrid),
    ``partner`` (a batch's hybrid rows' remaining images, in row order: plain rows need none),
    ``mask_id`` (-1 for plain rows), ``target``, ``index`` (training-set index of
    ``image``) and ``is_forget`` (a plain row of a forgetting sample). Mixing happens
    later, per batch, on the batch's device.

    Args:
        images: (N, C, H, W) uint8 training images (on disk: each row decoded when its batch is
            gathered, in the DataLoader's workers).
        targets: (N,) labels.
        remain_index: training-set indices of the plain rows (despite the name, any
            samples: the remaining set, the forget set or both).
        plan: optional hybrid plan appended after the plain rows.
        forget_mask: (N,) bool, True for forgetting samples (default: none).
        gather_images: read the images (the loader path); ``False`` gives ``partner_index``
            in place of ``image`` and ``partner``, for images kept on the device
            (:mod:`natmu_lightning.data.resident`).
    """

    def __init__(
        self,
        images: Images,
        targets: Tensor,
        remain_index: Tensor,
        plan: Mapping[str, Tensor] | None = None,
        forget_mask: Tensor | None = None,
        gather_images: bool = True,
    ) -> None:
        self.images, self.gather_images = images, gather_images
        forget_mask = forget_mask if forget_mask is not None else torch.zeros(targets.numel(), dtype=torch.bool)
        plain = remain_index.long()
        if plan is None or plan["label"].numel() == 0:
            empty = torch.empty(0, dtype=torch.long)
            plan = {"forget_index": empty, "remain_index": empty, "mask_id": empty, "label": empty}
        hybrid = {key: plan[key].long() for key in ("forget_index", "remain_index", "mask_id", "label")}
        # One row table for the whole stream, built once: a batch only indexes it.
        index = torch.cat([plain, hybrid["forget_index"]])
        self.rows = {
            "mask_id": torch.cat([torch.full_like(plain, -1), hybrid["mask_id"]]),
            "target": torch.cat([targets[plain], hybrid["label"]]),
            "index": index,
            "is_forget": torch.cat([forget_mask[plain], torch.zeros_like(hybrid["label"], dtype=torch.bool)]),
        }
        self.partner_index = torch.cat([plain, hybrid["remain_index"]])  # plain rows: the image itself

    def __len__(self) -> int:
        return self.rows["index"].numel()

    def __getitems__(self, positions: Sequence[int]) -> Batch:
        position = torch.as_tensor(positions, dtype=torch.long)
        rows = cast(Batch, {key: column[position] for key, column in self.rows.items()})
        if not self.gather_images:
            return {**rows, "partner_index": self.partner_index[position]}
        image = self.images[rows["index"]]
        hybrid_rows = torch.nonzero(rows["mask_id"] >= 0).flatten()
        if hybrid_rows.numel():
            partner = self.images[self.partner_index[position[hybrid_rows]]]
        else:  # a batch of plain rows carries no partner images (and copies none to the device)
            partner = image.new_empty((0, *image.shape[1:]))
        return {"image": image, "partner": partner, **rows}

    def __getitem__(self, position: int) -> Batch:
        batch = cast(dict, self.__getitems__([position]))
        row = {key: value[0] for key, value in batch.items() if key != "partner"}
        row["partner"] = batch["partner"][0] if len(batch["partner"]) else row["image"]
        return cast(Batch, row)


class EpochShuffleSampler(Sampler[int]):
    """A random permutation that depends only on ``(seed, epoch)``.

    Lightning calls :meth:`set_epoch` before every epoch, so a run resumed from an
    end-of-epoch checkpoint sees exactly the order an uninterrupted run would, whatever
    the number of data-loader workers. Under DDP Lightning wraps it in its
    ``DistributedSamplerWrapper``, which splits this order between the ranks and forwards
    ``set_epoch``. ``epoch`` sets the first epoch served (a resumed fit's; see
    ``ForgetRemainDataModule._loader_epoch``).
    """

    def __init__(self, length: int, seed: int, epoch: int = 0) -> None:
        self.length, self.seed, self.epoch = length, seed, epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.length, generator=generator).tolist())


# ---------------------------------------------------------------------- whole-batch layouts
#: Extra batch keys a layout adds: plain Python values, known on the host before the step.
PHASE: Final = "phase"
NUM_REMAIN: Final = "num_remain"


def _chunks(positions: Tensor, size: int) -> list[Tensor]:
    """Consecutive batches of ``size`` (the last one shorter), like a DataLoader without drop_last."""
    return list(positions.split(size)) if positions.numel() else []


def _for_rank(batches: list, rank: int, world_size: int) -> list:
    """Every ``world_size``-th batch from ``rank``, after padding the list to a multiple of
    ``world_size`` with its own first batches (as ``DistributedSampler`` pads samples), so
    that all ranks take the same number of batches of each kind."""
    if not batches:
        return []
    padded = batches + batches[: (-len(batches)) % world_size]
    return padded[rank::world_size]


class BatchLayout:
    """Which rows of a :class:`TrainStream` form each batch of an epoch, as a function of
    ``(seed, epoch)`` only: the stream's plain rows are the remaining samples at positions
    ``0 .. num_remain - 1`` followed by the forgetting samples.

    Per epoch the generator ``manual_seed(seed * 1_000_003 + epoch)`` draws a permutation of
    the remaining set, then (if the epoch uses it) one of the forget set. Subclasses
    implement :meth:`global_batches`; :meth:`batches` gives one rank's share.
    """

    def __init__(self, num_remain: int, num_forget: int, batch_size: int, forget_batch_size: int, seed: int) -> None:
        if batch_size < 1 or forget_batch_size < 1:
            raise ValueError(f"batch sizes must be >= 1, got {batch_size} and {forget_batch_size}")
        self.num_remain, self.num_forget = num_remain, num_forget
        self.batch_size, self.forget_batch_size, self.seed = batch_size, forget_batch_size, seed

    def _generator(self, epoch: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)

    def _remain_batches(self, generator: torch.Generator) -> list[Tensor]:
        return _chunks(torch.randperm(self.num_remain, generator=generator), self.batch_size)

    def _forget_batches(self, generator: torch.Generator) -> list[Tensor]:
        return _chunks(self.num_remain + torch.randperm(self.num_forget, generator=generator), self.forget_batch_size)

    def global_batches(self, epoch: int) -> list[list[tuple[Tensor, dict]]]:
        """Phases of the epoch, each a list of (stream positions, extra batch keys)."""
        raise NotImplementedError

    def batches(self, epoch: int, rank: int = 0, world_size: int = 1) -> list[tuple[Tensor, dict]]:
        """This rank's batches of ``epoch``: each phase is split across the ranks on its own,
        so every rank is in the same phase at the same step."""
        return [batch for phase in self.global_batches(epoch) for batch in _for_rank(phase, rank, world_size)]


class ForgetThenRemainLayout(BatchLayout):
    """SCRUB's epoch: one pass over the forget set in batches of ``forget_batch_size`` (SCRUB's
    max steps: only in the first ``max_phase_epochs`` epochs; every epoch when ``None``), then one
    pass over the remaining set in batches of ``batch_size``; each set shuffled per epoch. Batches carry ``phase``:
    ``"forget"`` or ``"remain"``."""

    def __init__(
        self,
        num_remain: int,
        num_forget: int,
        batch_size: int,
        forget_batch_size: int,
        seed: int,
        max_phase_epochs: int | None = None,
    ) -> None:
        super().__init__(num_remain, num_forget, batch_size, forget_batch_size, seed)
        self.max_phase_epochs = max_phase_epochs

    def global_batches(self, epoch: int) -> list[list[tuple[Tensor, dict]]]:
        generator = self._generator(epoch)
        remain = self._remain_batches(generator)
        in_forget_pass = self.max_phase_epochs is None or epoch < self.max_phase_epochs
        forget = self._forget_batches(generator) if in_forget_pass else []
        return [[(rows, {PHASE: "forget"}) for rows in forget], [(rows, {PHASE: "remain"}) for rows in remain]]


class PairedLayout(BatchLayout):
    """NegGrad+'s epoch, ``zip(retain_loader, cycle(forget_loader))``: every remaining batch
    (``batch_size``) followed by a forget batch (``forget_batch_size``), the forget batches
    taken in turn and started over when exhausted (``itertools.cycle`` repeats the first
    pass's batches in the same order). Batches carry ``num_remain``, the number of leading
    remaining rows."""

    def global_batches(self, epoch: int) -> list[list[tuple[Tensor, dict]]]:
        generator = self._generator(epoch)
        remain = self._remain_batches(generator)
        forget = self._forget_batches(generator)
        if not forget:
            raise ValueError("a paired stream needs at least one forgetting sample")
        return [
            [(torch.cat([rows, forget[i % len(forget)]]), {NUM_REMAIN: rows.numel()}) for i, rows in enumerate(remain)]
        ]


class LayoutBatches(Dataset):
    """Whole batches of a :class:`TrainStream` laid out by a :class:`BatchLayout`; the key of
    an item is ``(epoch, batch number on this rank)`` (use with ``batch_size=None``)."""

    def __init__(self, stream: TrainStream, layout: BatchLayout, rank: int = 0, world_size: int = 1) -> None:
        self.stream, self.layout, self.rank, self.world_size = stream, layout, rank, world_size
        self._epoch: int | None = None
        self._batches: list[tuple[Tensor, dict]] = []

    def epoch_batches(self, epoch: int) -> list[tuple[Tensor, dict]]:
        if epoch != self._epoch:
            self._epoch, self._batches = epoch, self.layout.batches(epoch, self.rank, self.world_size)
        return self._batches

    def __getitem__(self, key: tuple[int, int]) -> Batch:
        epoch, number = key
        rows, extra = self.epoch_batches(epoch)[number]
        return {**self.stream.__getitems__(rows.tolist()), **extra}


class LayoutSampler(DistributedSampler):
    """Yields the ``(epoch, batch number)`` keys of one rank's batches of the current epoch.

    A ``DistributedSampler`` subclass so that Lightning keeps it under DDP (the layout
    already gives each rank its share, phase by phase) instead of swapping in its own,
    which would shuffle the batches across phases.
    """

    dataset: LayoutBatches

    def __init__(self, dataset: LayoutBatches, epoch: int = 0) -> None:  # noqa: D107 (no super().__init__: no process group needed)
        self.dataset, self.epoch = dataset, epoch
        self.num_replicas, self.rank = dataset.world_size, dataset.rank

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset.epoch_batches(self.epoch))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter([(self.epoch, number) for number in range(len(self))])
