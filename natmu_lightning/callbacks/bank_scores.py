"""The evaluator's side of a bank of Retrains: the bank checked before any work, and the
members' and the model's outputs on the bank's splits (:mod:`natmu_lightning.metrics.bank`
computes the metrics from them)."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from natmu_lightning.bank.file import ReferenceBank
from natmu_lightning.callbacks.distributed import sharded_logits
from natmu_lightning.checkpoints import backbone_with_weights
from natmu_lightning.images import Images, take
from natmu_lightning.metrics import schedule
from natmu_lightning.metrics.bank import BANK_SPLITS, SLICE_SIZE, logit_confidence
from natmu_lightning.metrics.evaluation import BankOutputs

Splits = dict[str, tuple[Images, Tensor]]


class BankScores:
    """A bank's members scored once on the bank's splits: the whole forget set and seeded
    slices (at most ``SLICE_SIZE`` samples, drawn from ``seed + 2`` and ``seed + 3``) of the
    remaining and test sets, through the evaluator's sharded forward passes (exact under DDP).

    Args:
        bank: the bank, as read from its ``bank.json``.
        seed: the evaluator's seed.
        batch_size: samples per forward pass.
    """

    def __init__(self, bank: ReferenceBank, seed: int, batch_size: int) -> None:
        self.bank, self.seed, self.batch_size = bank, seed, batch_size
        # (the splits they were drawn from, the bank's splits, the members' scores on them)
        self._cache: tuple[Splits, Splits, dict[str, Tensor]] | None = None

    def check(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Refuse a bank whose member files changed or do not fit the backbone, or that was
        trained for another forget request (when the datamodule has resolved it).

        Raises:
            ValueError: naming the member or the request.
        """
        self.bank.check_members()
        for member in self.bank.members:
            backbone_with_weights(pl_module, str(member.checkpoint), f"reference_bank member seed {member.seed}")
        self.check_request(trainer)

    def check_request(self, trainer: pl.Trainer) -> None:
        """Refuse a bank of another forget request, once the datamodule has resolved its own."""
        indices = getattr(getattr(trainer, "datamodule", None), "forget_indices", None)
        if indices is not None:
            self.bank.check_request(indices)

    def outputs(self, trainer: pl.Trainer, model: nn.Module, splits: Splits, forget_probs: Tensor) -> BankOutputs:
        """The model's outputs on the bank's splits (its forget outputs are ``forget_probs``) and
        the members' scores there (a collective under DDP, like every forward pass here)."""
        chosen, member_scores = self._members(trainer, splits)
        probs = {"forget": forget_probs}
        for name in ("remain", "test"):
            probs[name] = sharded_logits(model, chosen[name][0], self.batch_size, trainer).softmax(1)
        labels = {name: targets for name, (_, targets) in chosen.items()}
        return BankOutputs(probs, labels, member_scores)

    def _members(self, trainer: pl.Trainer, splits: Splits) -> tuple[Splits, dict[str, Tensor]]:
        """The bank's splits and the members' scores on them, computed once for a given splits object."""
        if self._cache is None or self._cache[0] is not splits:
            self.check_request(trainer)  # resolved by now
            chosen: Splits = {"forget": splits["forget"]}
            for offset, name in ((2, "remain"), (3, "test")):
                images, targets = splits[name]
                keep = schedule.subset_indices(targets.numel(), SLICE_SIZE, self.seed + offset)
                chosen[name] = (images, targets) if keep is None else (take(images, keep), targets[keep])
            scores: dict[str, list[Tensor]] = {name: [] for name in BANK_SPLITS}
            for member in self.bank.members:
                what = f"reference_bank member seed {member.seed}"
                network = backbone_with_weights(trainer.lightning_module, str(member.checkpoint), what)
                for name, (images, targets) in chosen.items():
                    member_probs = sharded_logits(network, images, self.batch_size, trainer).softmax(1)
                    scores[name].append(logit_confidence(member_probs, targets))
                del network
            self._cache = (splits, chosen, {name: torch.stack(found) for name, found in scores.items()})
        return self._cache[1], self._cache[2]
