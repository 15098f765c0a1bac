"""``RLModule``: unlearning by training the forgetting samples on random wrong labels."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from natmu_lightning.checks import check_choice
from natmu_lightning.data.contracts import unlearning_data
from natmu_lightning.data.streams import batch_fields
from natmu_lightning.methods.base import UnlearningModule, check_finite, log_training_values
from natmu_lightning.methods.recipe import Recipe

Relabel = Literal["fixed", "per_batch"]


def random_other_labels(targets: Tensor, num_classes: int, generator: torch.Generator | None = None) -> Tensor:
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


def fixed_wrong_labels(targets: Tensor, forget_indices: Tensor, num_classes: int, seed: int) -> Tensor:
    """One wrong label per forgetting sample, drawn once from ``seed``: a table over the training set.

    The NatMU authors' relabelling (``get_random_idx_of_retainData`` in
    ``sample-wise/utils/generate_patch_data.py`` of https://github.com/ZhengbaoHe/NatMU, used by
    their ``amnesiac.py`` and ``salun.py``): for each forgetting sample a class drawn uniformly
    among the classes other than its own, once, kept for the whole run. The draw is
    :func:`random_other_labels` over the forget set in increasing training-index order (so it
    does not depend on the order a request lists the samples in).

    Args:
        targets: (N,) labels of the whole training set.
        forget_indices: training-set indices of the forgetting samples.
        num_classes: number of classes (>= 2).
        seed: seed of the draw.

    Returns:
        (N,) long: the wrong label of each forgetting sample, the true label elsewhere.

    Example:
        >>> table = fixed_wrong_labels(torch.tensor([0, 1, 2, 0]), torch.tensor([3, 1]), 3, seed=0)
        >>> table[[0, 2]].tolist(), bool(table[1] != 1), bool(table[3] != 0)
        ([0, 2], True, True)
    """
    order = torch.sort(forget_indices.long().cpu()).values
    table = targets.long().cpu().clone()
    table[order] = random_other_labels(table[order], num_classes, torch.Generator().manual_seed(int(seed)))
    return table


RL_RECIPE = Recipe(optimizer="adamw", lr=1.8e-5, weight_decay=4e-4, lr_schedule="cosine")
"""See RLModule for where each number comes from."""


class RLModule(UnlearningModule):
    """Random labels (RL, "Amnesiac" unlearning): Graves, Nagisetty, Ganesh,
    "Amnesiac Machine Learning", AAAI 2021 (arXiv 2010.10981); the relabelling baseline
    of SalUn (Fan et al., ICLR 2024, ``unlearn/RL.py`` of
    https://github.com/OPTML-Group/Unlearn-Saliency) and of the NatMU paper
    (``sample-wise/amnesiac.py`` of https://github.com/ZhengbaoHe/NatMU).

    The module trains on one shuffled stream over the remaining AND forgetting samples
    (``stream = "both"``); remaining rows keep their labels, forgetting rows are
    trained on a wrong label, and the loss is the cross-entropy over all rows.

    ``relabel = "fixed"`` (default, the NatMU authors' ``amnesiac.py``): each forgetting
    sample gets ONE wrong label, drawn once when the fit starts from the datamodule's
    ``seed`` (:func:`fixed_wrong_labels`) and kept for every epoch: the model is taught
    a consistent wrong answer, which is what relabelling is measured for ("reinforcing
    incorrect information"). The table is rebuilt identically on every rank and on
    resume. ``relabel = "per_batch"`` redraws a wrong label for every row of every batch
    (:func:`random_other_labels`, on the batch's device, from the global RNG that
    ``seed_everything`` seeds); SalUn's own code draws ``randint(0, C)`` per batch for
    CIFAR-10, which can return the true label, and neither form here does. The NatMU
    authors also train RL without augmentation; set the datamodule's ``crop_padding: 0``
    (and ``horizontal_flip: false``) to match.

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
        relabel: ``"fixed"`` (one wrong label per forgetting sample for the run) or
            ``"per_batch"`` (a new one in every batch), see above.
        reinit_classifier: re-initialise the final linear layer first.
        See :class:`~natmu_lightning.methods.base.BackboneModule` for the rest.

    Raises:
        ValueError: ``original_ckpt`` missing, an unknown ``relabel`` (and the base
            class's checks); at fit, ``"fixed"`` with a datamodule that does not expose
            the forget set.
    """

    stream = "both"

    def __init__(
        self,
        backbone: nn.Module,
        original_ckpt: str,
        recipe: Recipe = RL_RECIPE,
        relabel: Relabel = "fixed",
        **kwargs: Any,
    ) -> None:
        check_relabel(relabel)
        super().__init__(backbone, original_ckpt, Recipe.read(recipe, RL_RECIPE), **kwargs)
        self.wrong_labels: Tensor | None
        self.register_buffer("wrong_labels", None, persistent=False)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit" and self.hparams.get("relabel", "fixed") == "fixed":
            # A non-persistent buffer: the strategy moves it with the module, checkpoints omit it
            # (a resumed run draws the same table again).
            self.wrong_labels = self._fixed_label_table()

    def _fixed_label_table(self) -> Tensor:
        datamodule = unlearning_data(
            self.trainer,
            f"{type(self).__name__}(relabel='fixed'), which draws one wrong label per forgetting sample "
            "from the forget set and seed,",
            ("forget_indices", "train_targets", "num_classes", "seed"),
            hint=", or pass relabel='per_batch'",
        )
        if datamodule.forget_indices is None:
            raise RuntimeError(
                "the datamodule's forget set is not resolved: it is in the datamodule's setup, or, for a request "
                "that needs the original model, when the module's setup hands it over (prepare_for)"
            )
        return fixed_wrong_labels(
            datamodule.train_targets, datamodule.forget_indices, int(datamodule.num_classes), int(datamodule.seed)
        )

    def training_targets(self, batch: Any, is_forget: Tensor, num_classes: int) -> Tensor:
        """The labels a batch is trained on: its forgetting rows' wrong labels (see ``relabel``)."""
        (targets,) = batch_fields(batch, "target", user=type(self).__name__)
        if self.hparams.get("relabel", "fixed") == "fixed":
            if self.wrong_labels is None:
                raise RuntimeError("the fixed wrong labels are drawn in setup('fit'); train the module with a Trainer")
            wrong = self.wrong_labels[batch_fields(batch, "index", user=type(self).__name__)[0]]
        else:
            wrong = random_other_labels(targets, num_classes)
        return torch.where(is_forget, wrong, targets)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        images, is_forget = batch_fields(batch, "image", "is_forget", user=type(self).__name__)
        is_forget = is_forget.bool()
        logits = self(images)
        labels = self.training_targets(batch, is_forget, logits.shape[1])
        loss = nn.functional.cross_entropy(logits, labels)
        check_finite(loss, self)
        n = is_forget.numel()
        log_training_values(self, {"train/loss": loss, "train/forget_fraction": is_forget.float().mean()}, batch_size=n)
        return loss


def check_relabel(relabel: str) -> None:
    check_choice("relabel", relabel, ("fixed", "per_batch"))
