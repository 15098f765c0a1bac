"""NatMU's part of a training stream: the hybrid plan, drawn once from the original model, and
the mixing of each batch's hybrid rows on the batch's device.

:class:`~natmu_lightning.data.ForgetRemainDataModule` builds one :class:`HybridBatches` for
the ``hybrid`` stream: it appends the plan's rows to the stream (the rows are training-set
indices, :class:`~natmu_lightning.data.streams.TrainStream`) and hands each batch's hybrid
rows to :meth:`HybridBatches.mix`. The math is in :mod:`natmu_lightning.natmu.hybrids`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from natmu_lightning.images import Images, take
from natmu_lightning.natmu.hybrids import (
    HybridOptions,
    build_hybrid_plan,
    gradual_masks,
    mix,
    plan_examples,
    validate_k,
)
from natmu_lightning.predict import predict_logits


class HybridBatches:
    """The hybrid rows of a NatMU stream: their plan, and how a batch's rows become images.

    Args:
        options: ``k`` hybrids per forgetting sample and the masks' shift ``delta``.
        seed: seed of the plan (the datamodule's, which also draws the forget set).
    """

    def __init__(self, options: HybridOptions, seed: int) -> None:
        self.options, self.seed = options, seed
        self.plan: dict[str, Tensor] | None = None
        self._masks: dict[tuple[int, int, str], Tensor] = {}

    def draw_plan(
        self,
        model: nn.Module,
        images: Images,
        targets: Tensor,
        forget_indices: Tensor,
        remain_indices: Tensor,
        num_classes: int,
        batch_size: int,
    ) -> dict[str, Tensor]:
        """Pair every forgetting sample with ``k`` remaining images, ranked by ``model``'s
        predictions on the forget set (:func:`~natmu_lightning.natmu.hybrids.build_hybrid_plan`).

        Args:
            model: the ORIGINAL model (the method hands itself over before any training step).
            images: the uint8 training images the indices address.
            targets: their labels.
            forget_indices: training-set indices of the forget set.
            remain_indices: training-set indices of the remaining set.
            num_classes: the dataset's number of classes.
            batch_size: samples per forward pass of the predictions.

        Raises:
            ValueError: ``k`` impossible for ``num_classes``, or a model with another number of outputs.
        """
        validate_k(self.options.k, num_classes)
        logits = predict_logits(model, take(images, forget_indices), batch_size)
        if logits.shape[1] != num_classes:
            raise ValueError(f"the model outputs {logits.shape[1]} classes but the dataset has {num_classes}")
        self.plan = build_hybrid_plan(
            forget_indices,
            targets[forget_indices],
            logits.softmax(dim=1),
            remain_indices,
            targets[remain_indices],
            k=self.options.k,
            generator=torch.Generator().manual_seed(self.seed),
        )
        return self.plan

    def mix(self, forget_images: Tensor, partners: Tensor, mask_ids: Tensor) -> Tensor:
        """The hybrids of a batch's hybrid rows, on their device: each forgetting image blended
        with its remaining partner through mask ``mask_ids`` (masks built once per device)."""
        height, width = forget_images.shape[-2], forget_images.shape[-1]
        key = (height, width, str(forget_images.device))
        if key not in self._masks:
            self._masks[key] = gradual_masks(height, width, self.options.delta).to(forget_images.device)
        return mix(forget_images, partners, self._masks[key][mask_ids].unsqueeze(1))

    def plan_arrays(self) -> dict[str, np.ndarray]:
        """The plan as arrays, for ``hybrid_plan.npz``."""
        return {key: value.numpy() for key, value in self._drawn().items()}

    def examples(
        self, images: Images, targets: Tensor, classes: list[str], num_forget: int = 4
    ) -> dict[str, np.ndarray]:
        """The first ``num_forget`` forgetting samples' hybrids, for figures: uint8 ``forget``,
        ``remain`` and ``hybrid`` images (rows x k x C x H x W), ``label``, ``mask_id``,
        ``classes`` and the ``delta`` used."""
        examples = plan_examples(images, targets, self._drawn(), self.options.k, self.options.delta, num_forget)
        return {**examples, "classes": np.asarray(classes)}

    def _drawn(self) -> dict[str, Tensor]:
        if self.plan is None:
            raise RuntimeError("no hybrid plan yet: the method hands the model over in its setup (prepare_for)")
        return self.plan
