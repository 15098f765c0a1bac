"""``SalUnModule``: random-label unlearning restricted to the most salient weights."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor, nn

from natmu_lightning.checks import check_in_range
from natmu_lightning.data.contracts import unlearning_data
from natmu_lightning.images import Images, image_batches
from natmu_lightning.methods.recipe import Recipe
from natmu_lightning.methods.rl import RLModule
from natmu_lightning.predict import model_inputs

CHECKPOINT_KEY = "salun_saliency_mask"


def forget_gradients(
    model: nn.Module,
    named_params: Sequence[tuple[str, nn.Parameter]],
    images: Images,
    targets: Tensor,
    batch_size: int,
) -> list[Tensor]:
    """Gradient of the mean cross-entropy over the whole forget set, one tensor per parameter.

    The model runs in eval mode (batch-norm running statistics, no dropout) on
    un-augmented images: uint8 ``images`` become floats in [0, 1] on the model's device,
    in its floating dtype (:func:`~natmu_lightning.predict.model_inputs`), batch by batch. The
    parameters' ``.grad`` fields are left untouched. A parameter the forward does not
    use gets a zero gradient.
    """
    params = [p for _, p in named_params]
    totals = [torch.zeros_like(p) for p in params]
    n = targets.numel()
    if n == 0:
        raise ValueError("SalUn needs at least one forgetting sample to compute weight saliency")
    was_training = model.training
    model.eval()
    try:
        for start, pixels in zip(range(0, n, batch_size), image_batches(images, batch_size)):
            x = model_inputs(model, pixels)
            y = targets[start : start + batch_size].to(x.device)
            loss = nn.functional.cross_entropy(model(x), y, reduction="sum") / n
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            for total, grad in zip(totals, grads):
                if grad is not None:
                    total.add_(grad)
    finally:
        model.train(was_training)
    return totals


def saliency_masks(gradients: Sequence[Tensor], fraction: float) -> list[Tensor]:
    """Bool masks selecting the ``int(N * fraction)`` entries of largest ``|gradient|``.

    One global ranking over all ``N`` entries of all tensors (SalUn's hard threshold);
    at least one entry is selected. Ties at the threshold are broken by ``torch.topk``.

    Example:
        >>> masks = saliency_masks([torch.tensor([0.1, -3.0]), torch.tensor([2.0, 0.0])], 0.5)
        >>> [m.tolist() for m in masks]
        [[False, True], [True, False]]
    """
    check_in_range("fraction", fraction, 0.0, 1.0, low_open=True)
    flat = torch.cat([g.detach().abs().flatten().float() for g in gradients])
    total = flat.numel()
    k = min(max(int(total * fraction), 1), total)
    selected = torch.zeros(total, dtype=torch.bool, device=flat.device)
    selected[torch.topk(flat, k, sorted=False).indices] = True
    masks, start = [], 0
    for g in gradients:
        masks.append(selected[start : start + g.numel()].view(g.shape))
        start += g.numel()
    return masks


SALUN_RECIPE = Recipe(optimizer="adamw", lr=5e-5, weight_decay=3e-4, lr_schedule="cosine")
"""See SalUnModule for where each number comes from."""


class SalUnModule(RLModule):
    """SalUn: Fan, Liu, Zhang, Wong, Wei, Liu, "SalUn: Empowering Machine Unlearning via
    Gradient-based Weight Saliency", ICLR 2024 (arXiv 2310.12508), public code
    https://github.com/OPTML-Group/Unlearn-Saliency (``generate_mask.py`` and
    ``unlearn/RL.py``); the NatMU authors' version is ``sample-wise/salun.py`` of
    https://github.com/ZhengbaoHe/NatMU.

    1. Saliency mask, at the start of training (``on_train_start``), while the backbone
       holds the ORIGINAL weights (its head re-initialised first with ``reinit_classifier``):
       the gradient of the cross-entropy of the whole forget
       set (``trainer.datamodule.evaluation_splits()["forget"]``, eval mode, no
       augmentation, batches of the datamodule's ``eval_batch_size``), then a hard mask
       keeping the ``int(N * saliency_fraction)`` weights of largest ``|gradient|``
       among ALL ``N`` entries of ALL trainable parameters (one global threshold;
       convolution and linear weights, biases and batch-norm affine weights alike, as in
       both reference implementations, which loop over ``model.named_parameters()``).
       The sign of the loss does not matter (the references use ``-CE``) since only
       ``|gradient|`` is ranked. The references sum per-batch mean gradients; the mean
       over the whole set used here differs only in the weight of a smaller last batch.
       Neither reference steps its optimizer while it accumulates (``save_gradient_ratio``
       in SalUn's ``generate_mask.py``, ``get_weight_mask`` in NatMU's ``salun.py``: only
       ``zero_grad`` and ``backward`` per batch): every batch sees the original weights,
       as here.
    2. Random-label training (:class:`~natmu_lightning.methods.rl.RLModule`: the
       ``"both"`` stream, each forgetting sample trained on one wrong class drawn once
       from the seed, as the NatMU authors' ``salun.py``; ``relabel="per_batch"`` redraws
       it per batch) that updates only the masked weights.

    Unmasked weights stay EXACTLY at their original values: their gradients are zeroed
    before each optimizer step (``on_before_optimizer_step``, so gradient clipping and
    optimizer statistics see only the salient weights), and after each step the
    unmasked entries are copied back from a snapshot (``optimizer_step``). Zeroing alone
    is not enough: AdamW's decoupled weight decay, SGD's weight decay and momentum move a
    weight whose gradient is zero. The NatMU authors' ``salun.py`` only masks the
    gradients (so decay moves unmasked weights); the current SalUn code also restores
    them after each step, as done here.

    Batch-norm running means and variances are buffers, not parameters: they are not
    masked and keep updating in train mode, as in both reference implementations.

    The mask is saved in every checkpoint; a run resumed with ``fit --ckpt_path`` reuses
    it (the unmasked weights of the checkpoint are the original ones), so resuming never
    recomputes saliency at moved weights. Under DDP the mask is computed on every rank
    and rank 0's copy is broadcast.

    Recipes of the NatMU paper (its authors' ``scripts/*/salun.sh``: AdamW, 5 epochs,
    per-step cosine to zero, no warm-up; batch 128, 256 for TinyImageNet):

    ======================== ========= ======= ============ =================
    setting                  model     lr      weight decay saliency_fraction
    ======================== ========= ======= ============ =================
    CIFAR-10, random         VGG-16    5.0e-5  3.0e-4       0.05
    CIFAR-100, random        ResNet-18 5.7e-5  1.0e-3       0.21
    TinyImageNet, random     ResNet-34 5.5e-5  5.3e-4       0.20
    ======================== ========= ======= ============ =================

    The defaults here are the CIFAR-10 row (the SalUn paper itself uses SGD and a 50%
    mask for CIFAR-10).

    Args:
        backbone: the architecture of the model to unlearn.
        original_ckpt: the trained model to unlearn (required).
        saliency_fraction: fraction of all weights that may change, in (0, 1].
        reinit_classifier: re-initialise the final linear layer first (the saliency mask
            and the snapshot are then taken with the re-initialised classifier).
        relabel: ``"fixed"`` or ``"per_batch"`` wrong labels (see ``RLModule``).
        See :class:`~natmu_lightning.methods.base.BackboneModule` for the rest.

    Raises:
        ValueError: ``original_ckpt`` missing, ``saliency_fraction`` outside (0, 1] or an
            unknown ``relabel``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        original_ckpt: str,
        saliency_fraction: float = 0.05,
        recipe: Recipe = SALUN_RECIPE,
        **kwargs: Any,
    ) -> None:
        check_in_range("saliency_fraction", saliency_fraction, 0.0, 1.0, low_open=True)
        super().__init__(backbone, original_ckpt, Recipe.read(recipe, SALUN_RECIPE), **kwargs)
        self.saliency: dict[str, Tensor] | None = None  # parameter name -> bool mask
        self._originals: dict[str, Tensor] | None = None
        self._loaded_saliency: dict[str, Tensor] | None = None

    # ------------------------------------------------------------------ the mask
    def _trainable(self) -> list[tuple[str, nn.Parameter]]:
        return [(name, p) for name, p in self.backbone.named_parameters() if p.requires_grad]

    @property
    def mask_fraction(self) -> float:
        """Fraction of the trainable weights the mask lets change."""
        if self.saliency is None:
            raise RuntimeError("the saliency mask is computed when training starts")
        selected = sum(int(m.sum()) for m in self.saliency.values())
        return selected / sum(m.numel() for m in self.saliency.values())

    def compute_saliency(self) -> dict[str, Tensor]:
        """The mask of the current weights on the datamodule's forget set (see the class doc)."""
        datamodule = unlearning_data(
            self.trainer, "SalUn's weight saliency on the forget set", ("evaluation_splits", "eval_batch_size")
        )
        images, targets = datamodule.evaluation_splits()["forget"]
        named = self._trainable()
        grads = forget_gradients(self.backbone, named, images, targets, int(datamodule.eval_batch_size))
        masks = saliency_masks(grads, float(self.hparams["saliency_fraction"]))
        return {name: mask for (name, _), mask in zip(named, masks)}

    def on_train_start(self) -> None:
        named = self._trainable()
        if self._loaded_saliency is not None:
            # Resumed: the checkpoint's unmasked weights are still the original ones.
            missing = sorted({name for name, _ in named} ^ set(self._loaded_saliency))
            if missing:
                raise ValueError(f"the checkpoint's saliency mask does not fit this backbone (e.g. {missing[:3]})")
            saliency = {name: self._loaded_saliency[name].to(p.device) for name, p in named}
        else:
            saliency = self.compute_saliency()
            cpu = self.trainer.strategy.broadcast({k: v.cpu() for k, v in saliency.items()}, src=0)
            saliency = {name: cpu[name].to(p.device) for name, p in named}
        self.saliency = saliency
        self._originals = {name: p.detach().clone() for name, p in named}
        rank_zero_info(
            f"SalUn: {self.mask_fraction:.2%} of {sum(m.numel() for m in saliency.values())} weights may change "
            f"(saliency_fraction={self.hparams['saliency_fraction']})"
        )

    # ------------------------------------------------------------------ masking the updates
    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.saliency is None:
            return
        for name, p in self._trainable():
            if p.grad is not None:
                p.grad.mul_(self.saliency[name])

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        self.restore_unmasked()

    @torch.no_grad()
    def restore_unmasked(self) -> None:
        """Copy the original values back into every weight outside the mask."""
        if self.saliency is None or self._originals is None:
            return
        for name, p in self._trainable():
            p.copy_(torch.where(self.saliency[name], p, self._originals[name]))

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.saliency is not None:
            checkpoint[CHECKPOINT_KEY] = {name: mask.cpu() for name, mask in self.saliency.items()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        saved = checkpoint.get(CHECKPOINT_KEY)
        self._loaded_saliency = {name: mask.bool() for name, mask in saved.items()} if saved else None
