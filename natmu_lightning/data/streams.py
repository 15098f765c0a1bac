"""Map-style datasets over in-memory uint8 images that fetch whole batches at once.

Both define ``__getitems__`` so a DataLoader gathers a batch with one tensor index
instead of a per-sample Python loop; :func:`collate_batch` passes the result through.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

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
    ``mask_id`` (-1 for plain rows), ``target`` and ``index`` (training-set index of
    ``image``). Mixing happens later, per batch, on the batch's device.
    """

    def __init__(
        self,
        images: Tensor,
        targets: Tensor,
        remain_index: Tensor,
        plan: Optional[Mapping[str, Tensor]] = None,
    ) -> None:
        self.images, self.targets = images, targets
        self.remain_index = remain_index.long()
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
        }

    def __getitem__(self, position: int) -> Batch:
        return {key: value[0] for key, value in self.__getitems__([position]).items()}
