"""The base every module shares: an injected backbone, weights loading, optimisation."""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from pytorch_lightning.utilities.types import OptimizerLRSchedulerConfig
from torch import Tensor, nn

from natmu_lightning.callbacks.record import UnlearningRecord
from natmu_lightning.checkpoints import FIT_LENGTH_KEY, final_linear, load_weights
from natmu_lightning.data.contracts import TrainingNeeds
from natmu_lightning.data.streams import batch_fields
from natmu_lightning.methods.recipe import Recipe
from natmu_lightning.predict import eval_mode, model_inputs
from natmu_lightning.process_group import release_process_group_at_exit

LEGACY_RECIPE_KEYS = frozenset(field.name for field in dataclasses.fields(Recipe))
"""Hyperparameters that 0.1 checkpoints held one by one, now fields of ``recipe``."""


class BackboneModule(pl.LightningModule):
    """A classifier around an injected backbone, optimised by a :class:`~natmu_lightning.methods.recipe.Recipe`.

    Subclasses set ``stream`` (which samples the datamodule trains on), pass their
    own default recipe, and may override :meth:`training_step`.

    Args:
        backbone: any ``nn.Module`` mapping float images in [0, 1] to logits.
        original_ckpt: weights to start from (Lightning checkpoint or plain state dict),
            loaded strictly with ``weights_only=True``; known prefixes are stripped.
        recipe: the optimiser, learning rate and schedule (each subclass reads what it is
            given with :meth:`Recipe.read <natmu_lightning.methods.recipe.Recipe.read>` against
            its own default). ``None`` for a module that never steps an optimiser (SSD): then
            ``configure_optimizers`` returns none.
        checkpoint_prefix: where the network's tensors sit in ``original_ckpt`` when it was saved
            by another LightningModule (``"net."``, ``"model.encoder."``, ...). By default the
            one top-level prefix whose tensors fit the backbone exactly is found by itself.
        reinit_classifier: re-initialise the final linear layer's weights (Xavier normal,
            gain sqrt 2; the bias is kept) when a fit starts, after the datamodule planned
            NatMU's hybrids with the original head (NatMU's full-class recipe).
        checkpoint_keys: what a checkpoint records beside the arguments (``_class_path``, read
            by the CLI; a 0.1 checkpoint's separate optimisation settings, see
            :meth:`on_load_checkpoint`), handed back by ``load_from_checkpoint`` to the methods
            that forward ``**kwargs`` here; ignored. Any other keyword is an error.

    Raises:
        TypeError: a keyword argument this class does not have, or a ``backbone`` that is not
            an ``nn.Module``.
        ValueError: an unlearning method without ``original_ckpt``, a checkpoint whose weights
            do not fit the backbone, or ``reinit_classifier=True`` on a backbone without a
            final ``nn.Linear``.
    """

    stream: str = "remain"
    requires_original_ckpt: bool = False
    """True for unlearning methods (see :class:`UnlearningModule`): they start from the trained model."""

    def __init__(
        self,
        backbone: nn.Module,
        original_ckpt: str | None = None,
        recipe: Recipe | None = None,
        reinit_classifier: bool = False,
        checkpoint_prefix: str | None = None,
        **checkpoint_keys: Any,
    ) -> None:
        super().__init__()
        unknown = sorted(key for key in checkpoint_keys if not key.startswith("_") and key not in LEGACY_RECIPE_KEYS)
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected keyword arguments {unknown}")
        if not isinstance(backbone, nn.Module):
            raise TypeError(f"backbone must be an nn.Module, got {type(backbone).__name__}")
        if self.requires_original_ckpt and not original_ckpt:
            raise ValueError(f"{type(self).__name__} needs original_ckpt: the trained model to unlearn")
        self.recipe = recipe
        # a 0.1 checkpoint's separate settings (load_from_checkpoint), or a call written for 0.1
        self._legacy_keys = sorted(set(checkpoint_keys) & LEGACY_RECIPE_KEYS)
        if self._legacy_keys:
            self._warn_legacy(self._legacy_keys)
        self.save_hyperparameters(ignore=["backbone", "recipe", *checkpoint_keys])
        if self.recipe is not None:
            # a plain dict: checkpoints load with weights_only=True and the CLI parses it back
            self.hparams["recipe"] = self.recipe.as_dict()
            # the loggers (hparams.yaml, TensorBoard, ...) write the initial copy: keep it whole
            self._hparams_initial = copy.deepcopy(self._hparams)
        # LightningCLI records the class path of the modules it builds; one built in Python
        # records it here, so `natmu-lightning validate --ckpt_path` can merge its checkpoint's
        # hyperparameters into a config (the config supplies the backbone, never saved here).
        self.hparams.setdefault("_class_path", f"{type(self).__module__}.{type(self).__qualname__}")
        self.backbone = backbone
        if original_ckpt is not None:
            load_weights(self.backbone, original_ckpt, "original_ckpt", prefix=checkpoint_prefix)
        if reinit_classifier:
            final_linear(self.backbone)  # fail now on a backbone without a classifier
        self._classifier_reinitialised = False
        self.finite_checks = DeferredFiniteChecks()

    def forward(self, images: Tensor) -> Tensor:
        return self.backbone(images)

    # ------------------------------------------------------------------ checks
    def setup(self, stage: str) -> None:
        """Check the run can work before any expensive work; hand the datamodule this method's
        needs and the model (it plans NatMU's hybrids, or ranks the hardest samples, with the
        original weights); then, for ``fit``, re-initialise the classifier if asked.

        Lightning calls this after the datamodule's ``setup`` and before the strategy moves the
        module to its device: the probe and the plan run wherever the weights are (see
        :mod:`natmu_lightning.predict`).
        """
        trainer = self._trainer
        if trainer is not None:
            check_trainer_options(trainer, self.backbone, stage)
        datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
        shape = getattr(datamodule, "image_shape", None)
        num_classes = getattr(datamodule, "num_classes", None)
        if shape is not None and num_classes is not None:
            self._probe(tuple(shape), int(num_classes))
        prepare_for = getattr(datamodule, "prepare_for", None)
        if callable(prepare_for):  # with the original head: the plan is drawn before any re-initialisation
            prepare_for(stage, self.training_needs(), self)
        if stage == "fit" and self.hparams.get("reinit_classifier") and not self._classifier_reinitialised:
            reinit_linear(final_linear(self.backbone))
            self._classifier_reinitialised = True

    def training_needs(self) -> TrainingNeeds:
        """What this method needs from the data; :meth:`setup` hands it to the datamodule
        (``ForgetRemainDataModule.prepare_for``) with the module itself as the model that plans
        hybrids or ranks the hardest samples. Methods with more needs extend it."""
        return TrainingNeeds(
            stream=self.stream,
            original_ckpt=self.hparams.get("original_ckpt"),
            unlearns=self.requires_original_ckpt,
        )

    def _probe(self, shape: tuple[int, ...], num_classes: int) -> None:
        probe = model_inputs(self.backbone, torch.zeros(2, *shape, dtype=torch.uint8))
        try:
            with eval_mode(self.backbone):
                out = self.backbone(probe)
        except RuntimeError as error:
            raise ValueError(
                f"the backbone {type(self.backbone).__name__} cannot take images of shape {shape} "
                f"(channels, height, width): {error}"
            ) from error
        if out.ndim != 2 or out.shape[1] != num_classes:
            raise ValueError(
                f"the backbone outputs {tuple(out.shape[1:])} per image but the dataset has {num_classes} classes; "
                "set the backbone's num_classes to match"
            )

    def teardown(self, stage: str) -> None:
        """A multi-process fit, validation, test or prediction that ended well (Lightning calls
        this hook only then) releases its process group when this process exits
        (:mod:`natmu_lightning.process_group`); nothing happens on one process."""
        release_process_group_at_exit()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the fit's planned length: a checkpoint used as an original or a reference then
        tells whether its fit finished (:func:`~natmu_lightning.checkpoints.unfinished_fit`)."""
        if self._trainer is not None:
            trainer = self.trainer
            checkpoint[FIT_LENGTH_KEY] = {
                "max_epochs": trainer.max_epochs,
                "max_steps": trainer.max_steps,
                "should_stop": trainer.should_stop,  # EarlyStopping or a Timer ending the fit on purpose
            }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        old = sorted(set(checkpoint.get("hyper_parameters", {})) & LEGACY_RECIPE_KEYS)
        if old and not self._legacy_keys:  # else __init__ said so
            self._warn_legacy(old)

    def _warn_legacy(self, keys: list[str]) -> None:
        if self.recipe is not None:
            rank_zero_warn(
                f"{type(self).__name__} ignores {keys}, optimisation settings as 0.1 took them (so a checkpoint "
                f"written before 0.2 holds them): the module uses {self.recipe}; pass recipe={{...}} to change them"
            )

    # ------------------------------------------------------------------ deferred loss checks
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self.finite_checks.flush()

    def on_train_epoch_end(self) -> None:
        # Module hooks run before monitoring callbacks: a non-finite loss stops the run before
        # ModelCheckpoint saves the epoch.
        self.finite_checks.flush()

    def on_train_end(self) -> None:
        self.finite_checks.flush()

    # ------------------------------------------------------------------ steps
    def training_step(self, batch: Any, batch_idx: int) -> Tensor | None:
        images, targets = batch_fields(batch, "image", "target", user=type(self).__name__)
        loss = nn.functional.cross_entropy(self(images), targets)
        check_finite(loss, self)
        log_training_values(self, {"train/loss": loss}, batch_size=targets.numel())
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _eval_step(self, batch: Any, stage: str) -> None:
        images, targets = batch_fields(batch, "image", "target", user=type(self).__name__)
        logits = self(images)
        n = targets.numel()
        self.log(f"{stage}/loss", nn.functional.cross_entropy(logits, targets), batch_size=n, sync_dist=True)
        if not self._logged_by_a_callback(f"{stage}/acc"):
            self.log(
                f"{stage}/acc",
                (logits.argmax(1) == targets).float().mean() * 100,
                batch_size=n,
                sync_dist=True,
                prog_bar=True,
            )

    def _logged_by_a_callback(self, key: str) -> bool:
        """Whether a callback owns ``key`` (the evaluator logs an exact ``test/acc``)."""
        trainer = self._trainer
        return trainer is not None and any(key in getattr(c, "logged_keys", ()) for c in trainer.callbacks)  # type: ignore[attr-defined]  # Lightning sets it

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> OptimizerLRSchedulerConfig | None:
        if self.recipe is None:
            return None
        optimizer = self.recipe.optimizer_for(p for p in self.parameters() if p.requires_grad)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        per_epoch = max(total // max(self.trainer.max_epochs or 1, 1), 1)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self.recipe.lr_factor(total, per_epoch))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class UnlearningModule(BackboneModule):
    """The base of every unlearning method: it starts from the trained model in ``original_ckpt``
    (required) and is trained on the datamodule stream named by ``stream``.

    Every fit writes ``unlearning_record.json`` (see
    :class:`~natmu_lightning.callbacks.UnlearningRecord`): the module attaches a default
    record unless the trainer already holds one (pass your own to change its options).
    """

    requires_original_ckpt = True

    def configure_callbacks(self) -> list[pl.Callback]:
        trainer = self._trainer
        if trainer is not None and any(isinstance(c, UnlearningRecord) for c in trainer.callbacks):  # type: ignore[attr-defined]  # Lightning sets it
            return []
        return [UnlearningRecord()]


def reinit_linear(layer: nn.Linear) -> None:
    """Xavier-normal weights (gain sqrt 2), bias untouched: the NatMU authors' full-class recipe.

    Their ``init_linear`` (``class-wise/utils/train.py``) applies
    ``xavier_normal_(m.weight, gain=calculate_gain("relu"))`` to every ``nn.Linear`` and
    leaves the bias alone; ``class-wise/natmu.py`` calls it after ``get_dataloader`` has
    built the natural hybrids with the original model. We re-initialise the final linear
    layer only (the classifier); for the authors' ResNet-18, whose only linear layer is
    the classifier, the two are the same.
    """
    nn.init.xavier_normal_(layer.weight, gain=math.sqrt(2.0))


SUPPORTED_PRECISIONS = ("32-true", "64-true", "16-true", "bf16-true", "16-mixed", "bf16-mixed")
"""Lightning precisions every method honours: inputs are made float32 and then cast to the
precision's input dtype (see ``ForgetRemainDataModule``); evaluation runs in the weights' dtype
and the metrics in float32 or float64."""


def check_trainer_options(trainer: pl.Trainer, backbone: nn.Module, stage: str) -> None:
    """Refuse trainer options the module cannot honour, before any work.

    ``16-true`` evaluates but does not train: float16 weights without loss scaling turn
    the first AdamW step into NaN (its ``eps=1e-8`` is 0 in float16; seen on digits).

    Raises:
        ValueError: an unsupported ``precision``, or ``sync_batchnorm`` with a backbone that
            has no batch-norm layer (it would silently do nothing).
    """
    precision = str(trainer.precision)
    if precision not in SUPPORTED_PRECISIONS:
        raise ValueError(f"precision {precision!r} is not supported; use one of {SUPPORTED_PRECISIONS}")
    if stage == "fit" and precision == "16-true":
        raise ValueError(
            "precision '16-true' cannot train these modules (float16 weights without loss scaling: AdamW's "
            "first step gives NaN); use '16-mixed' on a GPU, or 'bf16-mixed' / 'bf16-true'"
        )
    syncs_batchnorm = getattr(trainer.strategy, "_layer_sync", None) is not None
    if syncs_batchnorm and not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in backbone.modules()):
        raise ValueError(
            f"sync_batchnorm=True but the backbone {type(backbone).__name__} has no BatchNorm layer to synchronise"
        )


def check_finite(loss: Tensor, module: pl.LightningModule) -> None:
    """Stop with a clear message when the loss is NaN or infinite.

    On the CPU the check is immediate. On an accelerator reading the loss would make the
    host wait for the device at every step, so the loss is copied to pinned memory without
    blocking and checked at the next step's start, and at the epoch's end before
    ``ModelCheckpoint`` runs (see :class:`DeferredFiniteChecks`). A ``ModelCheckpoint`` that
    saves every n training steps runs before the next step's check, so it may still write the
    step whose loss turned non-finite; the run stops one step later. The step is read only
    when failing: a compiled training step would otherwise recompile at every step.
    """
    if loss.device.type == "cpu":
        if not torch.isfinite(loss).all():
            raise nonfinite_loss_error(loss.detach().flatten()[0].item(), module.global_step)
        return
    checks = getattr(module, "finite_checks", None)
    if not isinstance(checks, DeferredFiniteChecks):  # a module outside the BackboneModule family
        checks = DeferredFiniteChecks()
        setattr(module, "finite_checks", checks)  # nn.Module types attribute assignment for tensors and modules only
    checks.add(loss, module.global_step)


def log_training_values(module: pl.LightningModule, values: Mapping[str, Tensor | float], batch_size: int) -> None:
    """Log a training step's values on the steps the loggers record.

    Lightning's loggers write step values every ``trainer.log_every_n_steps`` steps (default
    50); the values are logged on exactly those steps and on each epoch's last step, so the
    loggers, and callbacks reading ``callback_metrics`` at an epoch's end, see what they saw
    when every step was logged. Logging every step cost host time for nothing: each
    ``self.log`` call takes Lightning about 1 ms on a CPU core (it walks the stored result
    with ``apply_to_collection``), a tenth of a digits step (``benchmarks/step_overhead.py``).

    ``train/loss`` goes to the progress bar when it is on the CPU only: Lightning turns
    progress-bar values into numbers with ``.item()`` at the end of EVERY step once logged,
    which on an accelerator makes the host wait for the device each step (the loss check is
    deferred for the same reason, :func:`check_finite`).
    """
    trainer = module._trainer
    if trainer is not None and not records_this_step(trainer, module.global_step):
        return
    for name, value in values.items():
        in_bar = name == "train/loss" and (not isinstance(value, Tensor) or value.device.type == "cpu")
        module.log(name, value, prog_bar=in_bar, batch_size=batch_size)


def records_this_step(trainer: pl.Trainer, global_step: int) -> bool:
    """Whether the loggers record the step that ``global_step`` optimizer steps precede, or it
    is the epoch's last. Lightning's rule is ``(steps taken + 1) % log_every_n_steps == 0`` over
    the batches that stepped an optimizer, which is ``global_step`` for the package's modules
    (one optimizer step per batch); it also writes when a fit is stopped, whose values are then
    those of the last recorded step."""
    every = trainer.log_every_n_steps  # type: ignore[attr-defined]  # set by Lightning's logger connector
    last = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
    return last or (every > 0 and (global_step + 1) % every == 0)


def nonfinite_loss_error(value: float, step: int) -> FloatingPointError:
    return FloatingPointError(
        f"the training loss became {value} at step {step}; try a smaller learning rate "
        "(the last good checkpoint is kept)"
    )


class DeferredFiniteChecks:
    """Losses copied to the host without blocking, checked once their copy has landed."""

    def __init__(self) -> None:
        self.pending: list[tuple[Tensor, torch.cuda.Event, int]] = []

    def add(self, loss: Tensor, step: int) -> None:
        host = torch.empty(loss.numel(), dtype=torch.float32, pin_memory=True)
        host.copy_(loss.detach().float().flatten(), non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self.pending.append((host, event, step))

    def flush(self) -> None:
        """Wait for the queued copies only (not for the work queued after them) and check."""
        pending, self.pending = self.pending, []
        for host, event, step in pending:
            event.synchronize()
            if not torch.isfinite(host).all():
                raise nonfinite_loss_error(float(host[0]), step)
