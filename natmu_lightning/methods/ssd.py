"""``SSDModule``: unlearning by dampening the parameters that matter most to the forget set."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor, nn

from natmu_lightning.checks import check_choice, check_integer, check_non_negative, check_positive
from natmu_lightning.data.contracts import unlearning_data
from natmu_lightning.images import Images, concat, image_batches
from natmu_lightning.methods.base import UnlearningModule
from natmu_lightning.predict import model_inputs

BatchWeighting = Literal["size", "uniform"]


def diagonal_importance(
    model: nn.Module,
    images: Images,
    targets: Tensor,
    batch_size: int = 128,
    weighting: BatchWeighting = "uniform",
) -> dict[str, Tensor]:
    """Per-parameter importance: the squared gradient of each batch's mean cross-entropy,
    averaged over batches (the SSD authors' ``ParameterPerturber.calc_importance``).

    The model runs in eval mode (restored afterwards), on consecutive, unshuffled
    batches of ``batch_size`` uint8 images. With ``batch_size=1`` this is the diagonal
    of the empirical Fisher information. Parameters' ``.grad`` are left untouched.

    ``weighting`` says how batches are averaged: ``"uniform"`` gives every batch the
    same weight, exactly as the authors' code; ``"size"`` weighs each batch by its
    number of images. The two agree whenever ``N`` is a multiple of ``batch_size``.
    They differ on a small final batch, whose squared gradient is inflated by its
    noise: on the digits forget set (130 = 128 + 2 images) the uniform average lets the
    2-image batch dominate, SSD then dampens 27% of a trained SmallCNN's parameters and
    every accuracy falls to ~15%, while the size-weighted average selects 0.8% and
    keeps them.

    Args:
        model: maps float images in [0, 1] to logits.
        images: (N, C, H, W) uint8 images (N >= 1).
        targets: (N,) labels.
        batch_size: images per gradient.
        weighting: ``"uniform"`` (default, the authors' exact estimator) or ``"size"``.

    Returns:
        ``{name: importance}`` for every parameter that requires a gradient (float32,
        on the model's device); parameters the loss does not reach get zeros.
    """
    if images.shape[0] == 0:
        raise ValueError("cannot compute importances on an empty set of images")
    if weighting not in ("size", "uniform"):
        raise ValueError(f"weighting must be 'size' or 'uniform', got {weighting!r}")
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    importance = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in named}
    num_batches = 0
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            for start, pixels in zip(range(0, images.shape[0], batch_size), image_batches(images, batch_size)):
                batch = model_inputs(model, pixels)
                labels = targets[start : start + batch_size].to(batch.device)
                loss = F.cross_entropy(model(batch), labels)
                grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
                weight = float(batch.shape[0]) if weighting == "size" else 1.0
                for (name, _), grad in zip(named, grads):
                    if grad is not None:
                        importance[name] += grad.detach().float().pow(2) * weight
                num_batches += 1
    finally:
        model.train(was_training)
    total = float(images.shape[0]) if weighting == "size" else float(num_batches)
    for value in importance.values():
        value /= total
    return importance


def dampen_parameters(
    model: nn.Module,
    forget_importance: dict[str, Tensor],
    full_importance: dict[str, Tensor],
    selection_alpha: float,
    dampening_lambda: float,
) -> dict[str, int]:
    """Selective synaptic dampening, in place.

    For every parameter element with ``imp_forget > alpha * imp_full``, multiply it by
    ``beta = min(lambda * imp_full / imp_forget, 1)``; leave the others alone. Since
    ``beta`` lies in [0, 1], no parameter grows in magnitude. Buffers (e.g. batch-norm
    statistics) are not touched, as in the authors' ``modify_weight``.

    Returns:
        ``{name: number of selected elements}`` for every parameter in the importances.
    """
    selected: dict[str, int] = {}
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name not in forget_importance:
                continue
            forget = forget_importance[name].to(param.device)
            full = full_importance[name].to(param.device)
            mask = forget > full * selection_alpha
            # forget > alpha * full >= 0 on the mask, so the division is safe there.
            beta = (full * dampening_lambda / torch.where(mask, forget, torch.ones_like(forget))).clamp(max=1.0)
            param.copy_(torch.where(mask, param * beta.to(param.dtype), param))
            selected[name] = int(mask.sum())
    return selected


class SSDModule(UnlearningModule):
    """Selective Synaptic Dampening: Foster, Schoepf, Brintrup, "Fast Machine Unlearning
    Without Retraining Through Selective Synaptic Dampening", AAAI 2024 (arXiv
    2308.07707); public code https://github.com/if-loops/selective-synaptic-dampening
    (``src/ssd.py::ParameterPerturber``, ``src/forget_random_strategies.py::ssd_tuning``).

    No gradient training. Once, at the start of fit (``on_train_start``), the module
    computes diagonal importances ``[F]_D_f`` on the forget set and ``[F]_D`` on the
    full training set (remaining then forgetting samples, the authors'
    ``ConcatDataset((retain, forget))`` order) with :func:`diagonal_importance`, then
    dampens with :func:`dampen_parameters`:
    ``theta_i *= min(lambda [F]_D,i / [F]_Df,i, 1)`` wherever
    ``[F]_Df,i > alpha [F]_D,i``. Images come un-augmented from the datamodule's
    ``evaluation_splits()``. Training steps are no-ops (manual optimisation, nothing
    stepped), so run it for one epoch over the (small) ``"forget"`` stream; the
    evaluator then reports the dampened model. (Lightning warns at the start that
    ``configure_optimizers`` returned ``None`` and the fit runs with no optimizer: that is
    SSD's design, not a fault.) The dampening is recorded in the
    checkpoint, so resuming a run never dampens twice. Under DDP every rank computes
    the same importances on the whole data, so the weights stay identical.

    Defaults are the authors': selection ``alpha = 10`` and dampening ``lambda = 1``
    (their ``forget_*_main.py`` scripts for random, full-class and sub-class
    forgetting: ``selection_weighting = 10 * model_size_scaler`` with scaler 1 for
    ResNet-18, ``dampening_constant = 1``), exponent 1
    and upper bound 1 (``lower_bound = 1`` in their code), importance batches of 128
    (their ``-b`` default and forget loader). Their importances are squared gradients
    of batch-mean losses, not per-sample ones; ``importance_batch_size = 1`` gives the
    per-sample empirical Fisher. Batches are averaged uniformly, as theirs
    (``batch_weighting = "uniform"``; their forget loader keeps a short last batch);
    ``batch_weighting = "size"`` weighs each batch by its size instead, which equals theirs
    whenever the set size is a multiple of the batch size and keeps a tiny final batch
    from dominating otherwise (see :func:`diagonal_importance`; ``configs/digits/ssd.yaml``
    needs it).

    Args:
        backbone: the architecture of the model to unlearn.
        original_ckpt: the trained model to unlearn (required).
        selection_alpha: selection threshold ``alpha`` (> 0).
        dampening_lambda: dampening constant ``lambda`` (>= 0).
        importance_batch_size: images per gradient when computing importances (>= 1).
        batch_weighting: ``"uniform"`` (the authors') or ``"size"``, see above.
        reinit_classifier: taken like every method's, but only ``False`` is accepted: SSD
            never trains, so a re-initialised classifier would stay random.
        See :class:`~natmu_lightning.methods.base.BackboneModule` for the rest (the
        optimizer is never stepped).

    Raises:
        ValueError: ``original_ckpt`` missing, ``selection_alpha`` not positive,
            negative ``dampening_lambda``, ``importance_batch_size`` < 1, an
            unknown ``batch_weighting`` or ``reinit_classifier=True``.
    """

    stream = "forget"

    def __init__(
        self,
        backbone: nn.Module,
        original_ckpt: str,
        selection_alpha: float = 10.0,
        dampening_lambda: float = 1.0,
        importance_batch_size: int = 128,
        batch_weighting: BatchWeighting = "uniform",
        **kwargs: Any,
    ) -> None:
        if kwargs.get("reinit_classifier"):
            raise ValueError(
                "SSDModule cannot re-initialise the classifier: it never trains, so the head would stay random"
            )
        check_positive("selection_alpha", selection_alpha)
        check_non_negative("dampening_lambda", dampening_lambda)
        check_integer("importance_batch_size", importance_batch_size, 1)
        check_choice("batch_weighting", batch_weighting, ("size", "uniform"))
        super().__init__(backbone, original_ckpt, None, **kwargs)
        self.automatic_optimization = False
        self.dampened = False
        #: selected elements per parameter, after dampening
        self.selected: dict[str, int] = {}

    def on_train_start(self) -> None:
        if self.dampened:
            return
        splits = unlearning_data(self.trainer, "SSDModule").evaluation_splits()
        forget_images, forget_targets = splits["forget"]
        remain_images, remain_targets = splits["remain"]
        if forget_images.shape[0] == 0:
            raise ValueError("SSD needs a non-empty forget set")
        batch, weighting = self.hparams["importance_batch_size"], self.hparams["batch_weighting"]
        forget_importance = diagonal_importance(self.backbone, forget_images, forget_targets, batch, weighting)
        full_importance = diagonal_importance(
            self.backbone,
            concat([remain_images, forget_images]),
            torch.cat([remain_targets, forget_targets]),
            batch,
            weighting,
        )
        self.selected = dampen_parameters(
            self.backbone,
            forget_importance,
            full_importance,
            self.hparams["selection_alpha"],
            self.hparams["dampening_lambda"],
        )
        self.dampened = True
        total = sum(p.numel() for p in self.backbone.parameters() if p.requires_grad)
        chosen = sum(self.selected.values())
        rank_zero_info(f"SSD dampened {chosen} of {total} parameters ({100.0 * chosen / max(total, 1):.3f}%)")

    def training_step(self, batch: Any, batch_idx: int) -> None:
        """No training: the weights were changed once in :meth:`on_train_start`."""
        return None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["ssd_dampened"] = self.dampened

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.dampened = bool(checkpoint.get("ssd_dampened", False))
