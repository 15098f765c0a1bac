"""``RLModule``: unlearning by training the forgetting samples on random wrong labels."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from natmu_lightning.methods.base import UnlearningModule, OptimizerName, ScheduleName, check_finite


def random_other_labels(targets: Tensor, num_classes: int, generator: Optional[torch.Generator] = None) -> Tensor:
    """A label drawn uniformly from the classes OTHER than each target.

    ``y' = (y + r) mod C`` with ``r`` uniform in ``{1, ..., C - 1}``: every wrong class
    has probability ``1 / (C - 1)`` and the true class has probability 0. Drawn on
    ``targets.device`` (with ``generator`` if given, which must live on that device).

    Example:
        >>> y = torch.zeros(1000, dtype=torch.long)
        >>> new = random_other_labels(y, 3, torch.Generator().manual_seed(0))
        >>> bool((new != y).all()), sorted(new.unique().tolist())
        (True, [1, 2])
    """
    if num_classes < 2:
        raise ValueError(f"random relabelling needs at least 2 classes, got {num_classes}")
    shift = torch.randint(1, num_classes, targets.shape, device=targets.device, generator=generator)
    return (targets + shift) % num_classes


def forget_flags(batch: Any, method: str) -> Tensor:
    """The bool ``is_forget`` flags of a ``"both"``-stream batch, or a clear error."""
    if not isinstance(batch, dict) or "is_forget" not in batch:
        raise ValueError(
            f"{method} trains on batches flagged with 'is_forget' (the ForgetRemainDataModule's "
            "'both' stream); got a batch without them"
        )
    return batch["is_forget"].bool()


class RLModule(UnlearningModule):
    """Random labels (RL, "Amnesiac" unlearning): Graves, Nagisetty, Ganesh,
    "Amnesiac Machine Learning", AAAI 2021 (arXiv 2010.10981); the relabelling baseline
    of SalUn (Fan et al., ICLR 2024, ``unlearn/RL.py`` of
    https://github.com/OPTML-Group/Unlearn-Saliency) and of the NatMU paper
    (``sample-wise/amnesiac.py`` of https://github.com/ZhengbaoHe/NatMU).

    The module trains on one shuffled stream over the remaining AND forgetting samples
    (``train_stream = "both"``). In every batch each forgetting row gets a fresh label
    drawn uniformly from the classes other than its true one
    (:func:`random_other_labels`, on the batch's device, from the global RNG that
    ``seed_everything`` seeds); remaining rows keep their labels; the loss is the
    cross-entropy over all rows. The class count is the backbone's output width.

    Differences from the reference code, on purpose: the NatMU authors draw one wrong
    label per forgetting sample once and keep it for the run (their
    ``get_random_idx_of_retainData``); SalUn's code draws ``randint(0, C)`` (per batch
    for CIFAR-10, once per epoch otherwise), which can return the true label. Redrawing a wrong label per batch is the
    Amnesiac idea without either quirk. The NatMU authors also train RL without
    augmentation; set the datamodule's ``crop_padding: 0`` (and ``horizontal_flip:
    false``) to match.

    Recipes of the NatMU paper (its authors' ``scripts/*/amn.sh``: AdamW, 5 epochs,
    per-step cosine to zero, no warm-up; batch 128, 256 for TinyImageNet):

    ======================== ========= ======= ============
    setting                  model     lr      weight decay
    ======================== ========= ======= ============
    CIFAR-10, random         VGG-16    1.8e-5  4.0e-4
    CIFAR-100, random        ResNet-18 1.9e-5  8.0e-4
    TinyImageNet, random     ResNet-34 1.5e-5  5.6e-4
    ======================== ========= ======= ============

    The defaults here are the CIFAR-10 row.

    Args:
        backbone: the architecture of the model to unlearn.
        original_ckpt: the trained model to unlearn (required).
        reinit_classifier: re-initialise the final linear layer first.
        See :class:`~natmu_lightning.methods.base.BackboneModule` for the rest.

    Raises:
        ValueError: ``original_ckpt`` missing (and the base class's checks).
    """

    train_stream = "both"

    def __init__(
        self,
        backbone: nn.Module,
        original_ckpt: str,
        optimizer: OptimizerName = "adamw",
        lr: float = 1.8e-5,
        weight_decay: float = 4e-4,
        momentum: float = 0.9,
        betas: Sequence[float] = (0.9, 0.999),
        lr_schedule: ScheduleName = "cosine",
        warmup_epochs: float = 0.0,
        milestones: Sequence[float] = (0.6, 0.8),
        reinit_classifier: bool = False,
    ) -> None:
        super().__init__(
            backbone, original_ckpt, optimizer, lr, weight_decay, momentum, betas,
            lr_schedule, warmup_epochs, milestones, reinit_classifier,
        )

    def training_targets(self, targets: Tensor, is_forget: Tensor, num_classes: int) -> Tensor:
        """The labels a batch is trained on: a random wrong class on forgetting rows."""
        return torch.where(is_forget, random_other_labels(targets, num_classes), targets)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        is_forget = forget_flags(batch, type(self).__name__)
        images, targets = batch["image"], batch["target"]
        logits = self(images)
        labels = self.training_targets(targets, is_forget, logits.shape[1])
        loss = nn.functional.cross_entropy(logits, labels)
        check_finite(loss, self)
        n = targets.numel()
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        self.log("train/forget_fraction", is_forget.float().mean(), batch_size=n)
        return loss
