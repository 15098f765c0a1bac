"""The steps between a forget request and the splits: what earlier requests forgot, the
original model's losses a ``HardestForget`` ranks by, and the evaluation splits."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from natmu_lightning.data.contracts import TrainingNeeds
from natmu_lightning.data.requests import ForgetRequest
from natmu_lightning.data.sources import SourceData
from natmu_lightning.images import Images, take
from natmu_lightning.predict import predict_logits
from natmu_lightning.records import PreviousRequest


def already_forgotten(previous: PreviousRequest | None, num_train: int) -> Tensor:
    """Training indices earlier deletion requests forgot (empty for a first request).

    Raises:
        ValueError: the previous record names an index this dataset does not have.
    """
    if previous is None:
        return torch.zeros(0, dtype=torch.long)
    already = previous.already_forgotten
    if already.numel() and int(already.max()) >= num_train:
        raise ValueError(
            f"the previous request's record {previous.record['path']!r} forgot training index "
            f"{int(already.max())}, but this dataset has {num_train} training samples: another dataset?"
        )
    return already


def original_losses(
    needs: TrainingNeeds | None, model: nn.Module | None, batch_size: int
) -> Callable[[Images, Tensor], Tensor]:
    """Per-sample losses of ``model``, which must hold the original weights (a method hands it
    over before any training step, so a module loaded from ``original_ckpt`` does); raises when
    called without one, as ``HardestForget`` would otherwise rank with untrained weights."""

    def losses(images: Images, targets: Tensor) -> Tensor:
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
        logits = predict_logits(model, images, batch_size)
        return torch.nn.functional.cross_entropy(logits, targets, reduction="none")

    return losses


def evaluation_splits(
    data: SourceData, request: ForgetRequest, forget_indices: Tensor, remain_indices: Tensor
) -> dict[str, tuple[Images, Tensor]]:
    """(uint8 images, labels) of ``forget``, ``remain`` and ``test``; for full-class and
    sub-class requests ``test`` holds the test samples outside the forgotten classes
    (sub-class) and ``forget_test`` those inside (the NatMU authors' ``retainDL_inTestSet``
    and ``forgetDL_inTestSet`` in ``class-wise/natmu.py``)."""
    splits = {
        "forget": (take(data.train.images, forget_indices), data.train.targets[forget_indices]),
        "remain": (take(data.train.images, remain_indices), data.train.targets[remain_indices]),
    }
    inside = request.forgotten_test_mask(data)
    if inside is None:
        splits["test"] = (data.test.images, data.test.targets)
    else:
        splits["test"] = (take(data.test.images, ~inside), data.test.targets[~inside])
        splits["forget_test"] = (take(data.test.images, inside), data.test.targets[inside])
    return splits
