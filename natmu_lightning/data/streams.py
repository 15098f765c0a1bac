"""Map-style datasets over in-memory uint8 images that fetch whole batches at once.

Both define ``__getitems__`` so a DataLoader gathers a batch with one tensor index
instead of a per-sample Python loop; :func:`collate_batch` passes the result through.
"""

from __future__ import annotations

from typing import Iterator, Mapping, Optional, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

Batch = dict[str, Tensor]


def collate_batch(batch: Batch) -> Batch:
    """The batch is already assembled by ``__getitems__``; a named function so workers can pickle it."""
    return batch


class EvalSplit(Dataset):
    """Samples ``indices`` of ``images`` with their labels: ``image`` (uint8), ``target``, ``index``."""

    def __init__(self, images: Tensor, targets: Tensor, indices: Tensor) -> None:
        self.images, self.targets, self.indices = images, targets, indices.long()

    def __len__(self) -> int:
        return self.indices.numel()

    def __getitems__(self, positions: Sequence[int]) -> Batch:
        index = self.indices[torch.as_tensor(positions, dtype=torch.long)]
        return {"image": self.images[index], "target": self.targets[index], "index": index}

    def __getitem__(self, position: int) -> Batch:
        return {key: value[0] for key, value in self.__getitems__([position]).items()}


class TrainStream(Dataset):
    """One stream over the remaining samples followed by the hybrid rows of a plan.

    A row yields ``image`` (the remaining image, or the FORGETTING image of a hybrid),
    ``partner`` (the hybrid's remaining image; the image itself for plain rows),
    ``mask_id`` (-1 for plain rows), ``target``, ``index`` (training-set index of
    ``image``) and ``is_forget`` (a plain row of a forgetting sample). Mixing happens
    later, per batch, on the batch's device.

    Args:
        images: (N, C, H, W) uint8 training images.
        targets: (N,) labels.
        remain_index: training-set indices of the plain rows (despite the name, any
            samples: the remaining set, the forget set or both).
        plan: optional hybrid plan appended after the plain rows.
        forget_mask: (N,) bool, True for forgetting samples (default: none).
    """

    def __init__(
        self,
        images: Tensor,
        targets: Tensor,
        remain_index: Tensor,
        plan: Optional[Mapping[str, Tensor]] = None,
        forget_mask: Optional[Tensor] = None,
    ) -> None:
        self.images, self.targets = images, targets
        self.remain_index = remain_index.long()
        self.forget_mask = forget_mask if forget_mask is not None else torch.zeros(targets.numel(), dtype=torch.bool)
        empty = torch.empty(0, dtype=torch.long)
        plan = plan or {"forget_index": empty, "remain_index": empty, "mask_id": empty, "label": empty}
        self.plan = {key: plan[key].long() for key in ("forget_index", "remain_index", "mask_id", "label")}

    def __len__(self) -> int:
        return self.remain_index.numel() + self.plan["label"].numel()

    def __getitems__(self, positions: Sequence[int]) -> Batch:
        position = torch.as_tensor(positions, dtype=torch.long)
        num_plain = self.remain_index.numel()
        is_hybrid = position >= num_plain
        plain_pos = position.clamp(max=max(num_plain - 1, 0))
        row = (position - num_plain).clamp(min=0)
        if self.plan["label"].numel() == 0:
            row = torch.zeros_like(position)
            plan = {key: torch.zeros(1, dtype=torch.long) for key in self.plan}
        else:
            plan = self.plan
        plain_index = self.remain_index[plain_pos] if num_plain else torch.zeros_like(position)
        first = torch.where(is_hybrid, plan["forget_index"][row], plain_index)
        second = torch.where(is_hybrid, plan["remain_index"][row], first)
        return {
            "image": self.images[first],
            "partner": self.images[second],
            "mask_id": torch.where(is_hybrid, plan["mask_id"][row], torch.full_like(position, -1)),
            "target": torch.where(is_hybrid, plan["label"][row], self.targets[first]),
            "index": first,
            "is_forget": self.forget_mask[first] & ~is_hybrid,
        }

    def __getitem__(self, position: int) -> Batch:
        return {key: value[0] for key, value in self.__getitems__([position]).items()}


class EpochShuffleSampler(Sampler[int]):
    """A random permutation that depends only on ``(seed, epoch)``.

    Lightning calls :meth:`set_epoch` before every epoch, so a run resumed from an
    end-of-epoch checkpoint sees exactly the order an uninterrupted run would, whatever
    the number of data-loader workers. Under DDP Lightning swaps in its
    ``DistributedSampler``, which is seeded the same way.
    """

    def __init__(self, length: int, seed: int) -> None:
        self.length, self.seed, self.epoch = length, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.length, generator=generator).tolist())
