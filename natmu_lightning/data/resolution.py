"""The steps between a forget request and the splits: what earlier requests forgot, the
original model's losses a ``HardestForget`` ranks by, the evaluation splits, and whether a
checkpoint's saved data state fits this configuration."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from pytorch_lightning.utilities import rank_zero_warn
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


def check_saved_state(state: Mapping[str, Any], forget_indices: Tensor | None, seed: int, fitting: bool) -> None:
    """Refuse a checkpoint whose datamodule state does not fit this configuration.

    Resuming a fit needs the forget set it began with and its ``seed`` (shuffling, augmentation
    and the hybrid plan are drawn from it). Validating or testing needs the same forget set
    too, or for a further request's result the union with what earlier requests forgot (all
    it has forgotten), except for a checkpoint trained on every sample (``stream`` ``full``,
    an original: any request may be measured on it); a checkpoint that records no stream
    (written before this check) is warned about.

    Raises:
        ValueError: another forget set, or a resumed fit with another seed.
    """
    saved = state.get("forget_indices")
    if saved is not None and forget_indices is not None and not torch.equal(saved, forget_indices):
        already = state.get("already_forgotten")
        if not fitting and already is not None and torch.equal(torch.cat([saved, already]).unique(), forget_indices):
            return
        stream = state.get("stream")
        problem = (
            f"the checkpoint was trained on a different forget set ({saved.numel()} samples) than this "
            f"configuration resolves ({forget_indices.numel()})"
        )
        if fitting:
            raise ValueError(problem)
        if stream is None:
            rank_zero_warn(f"{problem}; it records no training stream, so it may be an original: measured anyway")
        elif stream != "full":
            raise ValueError(
                f"{problem}, on the {stream!r} stream: its forget, remaining and test numbers would be measured on "
                "other samples. Evaluate it with the configuration it was trained with (forget request, data.seed, "
                "previous_record)"
            )
    if fitting and state.get("seed", seed) != seed:
        raise ValueError(
            f"the checkpoint's fit used data.seed={state['seed']} and this configuration data.seed={seed}: resuming "
            f"would shuffle, augment and mix with another seed than the fit began with (resume with data.seed "
            f"{state['seed']})"
        )
