"""``UnlearningEvaluator``: forget / remaining / test accuracy and the entropy MIA.

Evaluation is exact under DDP by construction: each split is cut into fixed global
batches of ``batch_size`` samples, batch ``b`` runs on rank ``b % world_size`` through
the LightningModule itself (not the DDP wrapper, no distributed sampler, so no padded
duplicates), on the model's own device, and the logits are gathered back into the
original order. Every sample is computed in the same batch whatever the world size, so
every rank then holds the same outputs as a single device; the metrics (and the attacks'
fits) are computed once, on rank 0, and broadcast. During ``fit`` rank 0's buffers
(batch-norm statistics) are broadcast first, so an evaluation during a DDP fit is that of
the weights and buffers the checkpoint holds.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor, nn

from natmu_lightning.callbacks.distributed import on_rank_zero, sharded_logits, sync_buffers_from_rank_zero
from natmu_lightning.checkpoints import load_weights
from natmu_lightning.data.contracts import unlearning_data
from natmu_lightning.images import Images, take
from natmu_lightning.io import atomic_save_npz, atomic_write_json, json_ready, run_dir
from natmu_lightning.metrics import functional as MF
from natmu_lightning.metrics.names import RENAMED_KEYS
from natmu_lightning.metrics.splits import ATTACKS, per_sample_outputs, split_metrics

LOG_KEYS = {
    "forget_acc": "forget/acc",
    "remain_acc": "remain/acc",
    "retain_acc": "retain/acc",  # the old name (natmu_lightning.metrics.names)
    "test_acc": "test/acc",
    "forget_test_acc": "forget_test/acc",
    "mia_entropy": "mia/entropy",
    "mia_svc_confidence": "mia/svc_confidence",
    "mia_svc_entropy": "mia/svc_entropy",
    "mia_svc_m_entropy": "mia/svc_m_entropy",
    "mia_loss_cv": "mia/loss_cv",
    "kl_to_reference": "ref/kl",
    "js_to_reference": "ref/js",
    "avg_gap": "gap/avg",
    "tug_of_war": "gap/tow",
    "reference_free_gap": "gap/reference_free",
}


class UnlearningEvaluator(Callback):
    """Reports forgetting, remaining and test accuracy, membership attacks and gaps to Retrain.

    Runs at the end of every ``every_n_epochs``-th training epoch (and always after
    the last one), at the end of ``validate`` and of ``test``; needs a datamodule with
    ``evaluation_splits()`` (:class:`~natmu_lightning.data.ForgetRemainDataModule`).

    Every evaluation computes forget / remaining / test accuracy (``forget_test_acc``
    too for full-class and sub-class requests, whose ``test_acc`` leaves the forgotten
    kind's test samples out) and the paper's entropy MIA (``mia_entropy``; see
    :func:`split_metrics` for each attack's members and non-members). With
    ``reference_ckpt`` (Retrain, same backbone) it adds ``kl_to_reference`` (mean
    ``KL(p_ref || p)`` on the forget set, the paper's naturalness measure),
    ``js_to_reference`` (true Jensen-Shannon), ``avg_gap`` (mean |difference| over test,
    remaining, forget accuracy and MIA) and ``tug_of_war``; the reference's own numbers
    are computed once and reported as ``reference``. Without a Retrain, judge by
    ``reference_free_gap`` (always computed): the distance of the forget accuracy and of the
    entropy MIA to what the model scores on unseen samples of the same kind
    (:mod:`natmu_lightning.metrics.reference_free`; with ``rf_forget_acc_target``,
    ``rf_mia_forget``, ``rf_mia_target``). The slower ``attacks``
    (``mia_svc_confidence``, ``mia_svc_entropy``, ``mia_svc_m_entropy``: the SVC shadow
    protocol, % of the forget set predicted NON-member; ``mia_loss_cv``: cross-validated
    accuracy of a loss attack separating forget from test samples, 50 is ideal) run at
    the final evaluation, or every time with ``attacks_every_epoch``.

    Logged keys: ``forget/acc``, ``remain/acc`` (and its old name ``retain/acc``, see
    :data:`~natmu_lightning.metrics.names.RENAMED_KEYS`), ``test/acc``, ``forget_test/acc``,
    ``mia/entropy``, ``mia/svc_*``, ``mia/loss_cv``, ``ref/kl``, ``ref/js``, ``gap/avg``,
    ``gap/tow``, ``gap/reference_free``. ``gap/avg`` works as a ``ModelCheckpoint`` monitor (mode ``min``) to keep
    the checkpoint closest to Retrain; a checkpoint callback that monitors one of these keys
    saves on the epochs the evaluator measures (with ``every_n_epochs > 1``, a
    ``ModelCheckpoint`` left at its default of every epoch is set to the evaluator's
    interval). Choosing a checkpoint by ``gap/avg`` (or any key here) selects on the test
    set, the forget set and Retrain: report such a number as selected on them, or select on
    a separate validation forget request. This callback is the one owner of ``test/acc``
    (the module's own test loop then logs only ``test/loss``). Everything (plus the reference's numbers, world
    size, effective batch size and seed) goes to ``unlearning_metrics.json`` in the log dir.

    Every record also says whether the run has **collapsed** rather than unlearned
    (``collapsed``, ``collapse_reason``; :func:`~natmu_lightning.metrics.functional.collapse_reason`):
    a metric that is not finite, or test or remaining accuracy below 80% of the original
    model's. The original's metrics are ``original_metrics``, which the unlearning record
    hands over when it has measured them at the fit's start (``metrics_before``); without
    them only the first test applies. ``stop_on_collapse`` ends the fit at the first
    evaluation that finds a collapse (off by default).

    Args:
        reference_ckpt: weights of the Retrain model (same backbone) to compare with.
        every_n_epochs: evaluate every n training epochs.
        batch_size: samples per forward pass (the unit of work split across ranks).
        filename: name of the metrics file in the log dir.
        remain_subset: during training, evaluate the remaining set (accuracy and the
            MIA's members) on a fixed seeded subset: a fraction of it (a float in (0, 1])
            or a number of samples (an int). The final evaluation always uses all of it;
            so does every evaluation when a callback selects or stops on an evaluator key
            (``ModelCheckpoint(monitor="gap/avg")``), which compares evaluations with each
            other. ``None`` uses all of it every time. The default, a tenth, keeps an
            evaluation during training near a tenth of a NatMU epoch or less
            (benchmarks/RESULTS.md, "Speed").
        test_subset: the same for the test set (the MIA's non-members). The forget set,
            and for class requests the forgotten kind's test samples, are always whole.
        attacks: which slower attacks to run (subset of ``("svc", "loss_cv")``).
        attacks_every_epoch: run ``attacks`` at every evaluation, not only the final one.
        seed: seed of the remaining subset and of the loss attack's folds.
        save_outputs: at the final evaluation also write ``evaluation_outputs.npz``
            (per-sample entropy and loss of every split) for reports and plots.
        lightning_validation: keep Lightning's own validation loop during ``fit``. It runs
            over the test split, which this callback already measures, so it is switched
            off for the fit (``limit_val_batches = 0``, restored afterwards, also when the fit
            fails) unless this is set, a callback monitors a ``val/`` key, or the trainer
            validates on a schedule of its own (``check_val_every_n_epoch`` other than 1).
            ``validate`` is unaffected.
        reference_prefix: where the network sits in ``reference_ckpt`` when a LightningModule
            of your own saved it (as the modules' ``checkpoint_prefix``); by default the one
            top-level prefix whose tensors fit is found by itself.
        stop_on_collapse: stop the fit the first time an evaluation finds it collapsed.
    """

    def __init__(
        self,
        reference_ckpt: str | None = None,
        every_n_epochs: int = 1,
        batch_size: int = 512,
        filename: str = "unlearning_metrics.json",
        remain_subset: int | float | None = 0.1,
        test_subset: int | float | None = 0.1,
        attacks: Sequence[str] = ATTACKS,
        attacks_every_epoch: bool = False,
        seed: int = 0,
        save_outputs: bool = False,
        lightning_validation: bool = False,
        reference_prefix: str | None = None,
        stop_on_collapse: bool = False,
    ) -> None:
        if every_n_epochs < 1 or batch_size < 1:
            raise ValueError("every_n_epochs and batch_size must be >= 1")
        _check_subset("remain_subset", remain_subset)
        _check_subset("test_subset", test_subset)
        unknown = set(attacks) - set(ATTACKS)
        if unknown:
            raise ValueError(f"unknown attacks {sorted(unknown)}; choose from {ATTACKS}")
        self.reference_ckpt, self.reference_prefix = reference_ckpt, reference_prefix
        self.every_n_epochs, self.batch_size, self.filename = every_n_epochs, batch_size, filename
        self.remain_subset, self.test_subset = remain_subset, test_subset
        self.attacks, self.attacks_every_epoch = tuple(attacks), attacks_every_epoch
        self.seed, self.save_outputs, self.lightning_validation = seed, save_outputs, lightning_validation
        self.reference_metrics: dict[str, float] | None = None
        self.stop_on_collapse = stop_on_collapse
        #: the original model's metrics, which collapse is judged against (set by UnlearningRecord)
        self.original_metrics: dict[str, Any] | None = None
        self.last_metrics: dict[str, Any] | None = None
        self._reference_forget_probs: Tensor | None = None
        # keyed by (evaluates the full remaining set, attacks run): a final evaluation's
        # reference numbers include its attacks even after per-epoch ones without them
        self._reference_cache: dict[tuple[bool, tuple[str, ...]], dict[str, float]] = {}
        self._evaluated_step: int | None = None
        self._last_was_final = False
        self._whole_classes: bool | None = None
        # set per fit: whether a callback compares evaluations (then every one uses the full sets)
        self._full_sets_every_time = False
        self._val_batches_to_restore: int | float | None = None
        # the training subsets of the last splits seen: (splits, their subsets)
        self._subsets: tuple[dict[str, tuple[Images, Tensor]], dict[str, tuple[Images, Tensor]]] | None = None

    @property
    def logged_keys(self) -> frozenset[str]:
        """The keys this callback logs (the module leaves them to it)."""
        return frozenset(LOG_KEYS.values())

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._align_checkpoint_monitors(trainer)
            monitors = [getattr(callback, "monitor", None) for callback in trainer.callbacks]  # type: ignore[attr-defined]  # Lightning's
            self._full_sets_every_time = self._uses_subsets() and any(m in self.logged_keys for m in monitors)
            if self._full_sets_every_time:
                rank_zero_info(
                    "UnlearningEvaluator: a callback monitors an evaluator key, so every evaluation uses the whole "
                    "remaining and test sets (comparable from epoch to epoch)"
                )
            self._skip_lightning_validation(trainer, monitors)
        if self.reference_ckpt is not None and self.reference_metrics is None:
            # Fail on a bad reference before any training, not at the first epoch's end.
            load_weights(
                copy.deepcopy(_backbone(pl_module)), self.reference_ckpt, "reference_ckpt", prefix=self.reference_prefix
            )

    def _skip_lightning_validation(self, trainer: pl.Trainer, monitors: list[Any]) -> None:
        """Switch Lightning's validation loop off for the fit (it would measure the test split
        again every epoch), unless asked for, watched by a ``val/`` monitor, or scheduled by the
        user (``check_val_every_n_epoch`` other than 1: ``ModelCheckpoint`` then saves after
        validation only, so it must keep running)."""
        watches_validation = any(isinstance(m, str) and m.startswith("val/") for m in monitors)
        scheduled = trainer.check_val_every_n_epoch != 1
        if self.lightning_validation or watches_validation or scheduled:
            return
        if self._val_batches_to_restore is None:  # not already switched off by an unfinished fit
            self._val_batches_to_restore = trainer.limit_val_batches
        trainer.limit_val_batches = 0

    def _align_checkpoint_monitors(self, trainer: pl.Trainer) -> None:
        """Checkpoint callbacks monitoring an evaluator key save only on evaluated epochs.

        Raises:
            ValueError: such a callback saves every n training steps or on a time interval,
                or every n epochs with n not a multiple of ``every_n_epochs``.
        """
        for checkpoint in trainer.checkpoint_callbacks:
            monitor = getattr(checkpoint, "monitor", None)
            if monitor not in self.logged_keys:
                continue
            steps = getattr(checkpoint, "_every_n_train_steps", 0) or 0
            interval = getattr(checkpoint, "_train_time_interval", None)
            epochs = getattr(checkpoint, "_every_n_epochs", 1)
            if steps > 0 or interval is not None:
                raise ValueError(
                    f"ModelCheckpoint(monitor={monitor!r}) saves every n training steps or on a time interval, but "
                    f"the evaluator measures {monitor!r} at epoch ends only (every {self.every_n_epochs}): use "
                    "every_n_epochs"
                )
            if epochs == 1 and self.every_n_epochs > 1:
                checkpoint._every_n_epochs = self.every_n_epochs  # type: ignore[attr-defined]  # ModelCheckpoint's
                rank_zero_info(
                    f"ModelCheckpoint(monitor={monitor!r}) saves every {self.every_n_epochs} epochs, when the "
                    "evaluator measures it"
                )
            elif epochs > 0 and epochs % self.every_n_epochs:
                raise ValueError(
                    f"ModelCheckpoint(monitor={monitor!r}, every_n_epochs={epochs}) would look for {monitor!r} on "
                    f"epochs the evaluator does not measure (every_n_epochs={self.every_n_epochs}): use a multiple "
                    f"of {self.every_n_epochs}"
                )

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._restore_lightning_validation(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # Lightning skips the callbacks' teardown when a fit raises: restore the user's setting here.
        self._restore_lightning_validation(trainer)

    def _restore_lightning_validation(self, trainer: pl.Trainer) -> None:
        if self._val_batches_to_restore is not None:
            trainer.limit_val_batches = self._val_batches_to_restore
            self._val_batches_to_restore = None

    def _uses_subsets(self) -> bool:
        return self.remain_subset is not None or self.test_subset is not None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        # max_epochs is -1 (unlimited) when only max_steps bounds the run: no epoch is "last"
        # then, and on_fit_end catches the final one.
        last = trainer.max_epochs is not None and trainer.max_epochs > 0 and epoch >= trainer.max_epochs
        final = last or trainer.should_stop or _reaches_max_steps(trainer)
        if epoch % self.every_n_epochs == 0 or final:
            self._run(trainer, pl_module, "fit", log=True, final=final)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A run stopped between epochs' ends (max_steps, a callback's should_stop) is evaluated
        # here, where the strategy still holds the module on its device and every rank is alive.
        self.final_metrics(trainer, pl_module)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Reached without on_train_end only when the fit loop had nothing left to do (fit
        # --ckpt_path on a finished run). Lightning's teardown has moved the module back to the
        # CPU by now: the evaluation runs there (the device is the module's).
        self.final_metrics(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "validate" and not trainer.sanity_checking:
            self._run(trainer, pl_module, "validate", log=True, final=True)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._run(trainer, pl_module, "test", log=True, final=True)

    # ------------------------------------------------------------------ work
    def evaluate(self, trainer: pl.Trainer, model: nn.Module, final: bool = True) -> dict[str, float]:
        """Metrics of ``model`` on the datamodule's splits, identical on every rank.

        ``final=False`` (an evaluation during training) uses the remaining subset and
        skips the slower attacks unless configured otherwise.
        """
        probs, labels = self._outputs(trainer, model, final)
        attacks = self.attacks if (final or self.attacks_every_epoch) else ()
        return split_metrics(probs, labels, attacks, self.seed, self._whole_classes)

    def _outputs(
        self, trainer: pl.Trainer, model: nn.Module, final: bool
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        splits = _splits(trainer)
        # From the whole remaining set: a rare class may be missing from its subset.
        self._whole_classes = not bool(torch.isin(splits["forget"][1].unique(), splits["remain"][1]).any())
        if not final and not self._full_sets_every_time:
            splits = self._training_subsets(splits)
        probs = {
            name: sharded_logits(model, images, self.batch_size, trainer).softmax(1)
            for name, (images, _) in splits.items()
        }
        return probs, {name: targets for name, (_, targets) in splits.items()}

    def _training_subsets(self, splits: dict[str, tuple[Images, Tensor]]) -> dict[str, tuple[Images, Tensor]]:
        """``splits`` with the remaining and test sets cut to their seeded subsets, drawn once
        for a given splits object (the datamodule prepares its splits once per run)."""
        if self._subsets is None or self._subsets[0] is not splits:
            subsets = dict(splits)
            for offset, (name, size) in enumerate((("remain", self.remain_subset), ("test", self.test_subset))):
                images, targets = splits[name]
                keep = _subset_indices(targets.numel(), size, self.seed + offset)
                if keep is not None:
                    subsets[name] = (take(images, keep), targets[keep])
            self._subsets = (splits, subsets)
        return self._subsets[1]

    def _reference(self, trainer: pl.Trainer, pl_module: pl.LightningModule, final: bool) -> dict[str, float]:
        """The reference's metrics (computed once per kind of evaluation) and its forget-set outputs."""
        attacks = self.attacks if (final or self.attacks_every_epoch) else ()
        key = (final or self._full_sets_every_time or not self._uses_subsets(), attacks)
        if key not in self._reference_cache:
            assert self.reference_ckpt is not None  # only called with a reference
            probs, labels = self._file_outputs(
                trainer, pl_module, self.reference_ckpt, "reference_ckpt", final, self.reference_prefix
            )
            self._reference_cache[key] = on_rank_zero(
                trainer, lambda: split_metrics(probs, labels, attacks, self.seed, self._whole_classes)
            )
            self._reference_forget_probs = probs["forget"]
        return self._reference_cache[key]

    def _file_outputs(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        path: str,
        what: str,
        final: bool,
        prefix: str | None = None,
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Outputs of a copy of the module's backbone holding the weights in ``path``."""
        model = copy.deepcopy(_backbone(pl_module))
        load_weights(model, path, what, prefix=prefix)
        return self._outputs(trainer, model, final)

    def _comparison(
        self, trainer: pl.Trainer, metrics: dict[str, float], forget_probs: Tensor, reference: dict[str, float]
    ) -> dict[str, float]:
        """Divergences on the forget set and gaps to the reference's metrics."""
        reference_probs = self._reference_forget_probs
        assert reference_probs is not None  # set with the reference's metrics
        return on_rank_zero(
            trainer,
            lambda: {
                "kl_to_reference": MF.kl_divergence(reference_probs, forget_probs),
                "js_to_reference": MF.js_divergence(reference_probs, forget_probs),
                "avg_gap": MF.avg_gap(metrics, reference),
                "tug_of_war": MF.tug_of_war(metrics, reference),
            },
        )

    def measure_checkpoint(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        path: str,
        what: str = "checkpoint",
        attacks: Sequence[str] | None = None,
        prefix: str | None = None,
    ) -> dict[str, Any]:
        """A final evaluation of the module's backbone with the weights in ``path``, e.g. the
        original model before unlearning, with the gaps to the reference when there is one.
        ``attacks`` (default: the evaluator's) are the slower attacks to run; ``prefix`` is
        where the network sits in the file (see ``checkpoint_prefix``). Logs and writes
        nothing; a collective under DDP (every rank calls it)."""
        attacks = self.attacks if attacks is None else tuple(attacks)
        probs, labels = self._file_outputs(trainer, pl_module, path, what, final=True, prefix=prefix)
        metrics: dict[str, Any] = on_rank_zero(
            trainer, lambda: split_metrics(probs, labels, attacks, self.seed, self._whole_classes)
        )
        if self.reference_ckpt is not None:
            metrics.update(
                self._comparison(trainer, metrics, probs["forget"], self._reference(trainer, pl_module, True))
            )
        return json_ready(metrics)

    def final_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        """The record of the fit's final evaluation, run now if it has not run yet (a collective
        under DDP in that case)."""
        if self._evaluated_step != trainer.global_step or not self._last_was_final or self.last_metrics is None:
            self._run(trainer, pl_module, "fit", log=False, final=True)
        assert self.last_metrics is not None  # _run sets it
        return dict(self.last_metrics)

    def _run(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str, log: bool, final: bool = True
    ) -> None:
        if stage == "fit":
            sync_buffers_from_rank_zero(trainer, pl_module)
        probs, labels = self._outputs(trainer, pl_module, final)
        attacks = self.attacks if (final or self.attacks_every_epoch) else ()
        metrics: dict[str, Any] = on_rank_zero(
            trainer, lambda: split_metrics(probs, labels, attacks, self.seed, self._whole_classes)
        )
        if self.reference_ckpt is not None:
            reference = self._reference(trainer, pl_module, final)
            self.reference_metrics = reference
            metrics.update(self._comparison(trainer, metrics, probs["forget"], reference))
        if log:
            # Identical on every rank, so averaging across ranks changes nothing (and keeps
            # Lightning's distributed logging consistent for monitors such as gap/avg).
            pl_module.log_dict(
                {LOG_KEYS[k]: float(v) for k, v in metrics.items() if k in LOG_KEYS}, sync_dist=trainer.world_size > 1
            )
        self._evaluated_step, self._last_was_final = trainer.global_step, final
        datamodule = trainer.datamodule  # type: ignore[attr-defined]  # set by Lightning's data connector
        per_device = getattr(datamodule, "batch_size", None)
        record = {
            **metrics,
            "stage": stage,
            "final": final,
            "epoch": trainer.current_epoch,
            "global_step": trainer.global_step,
            "world_size": trainer.world_size,
            "effective_batch_size": None
            if per_device is None
            else per_device * trainer.world_size * trainer.accumulate_grad_batches,
            "seed": getattr(datamodule, "seed", None),
            "remain_evaluated": int(labels["remain"].numel()),
            "test_evaluated": int(labels["test"].numel()),
        }
        if self.reference_metrics is not None:
            record["reference"] = dict(self.reference_metrics)
            record["reference_ckpt"] = str(self.reference_ckpt)
        reason = MF.collapse_reason(metrics, self.original_metrics)
        record["collapsed"], record["collapse_reason"] = reason is not None, reason
        if reason is not None and stage == "fit" and self.stop_on_collapse and not trainer.should_stop:
            trainer.should_stop = True  # the same on every rank: the metrics are rank 0's, broadcast
            rank_zero_info(f"UnlearningEvaluator: the run has collapsed ({reason}); stopping (stop_on_collapse)")
        record = json_ready(record)
        self.last_metrics = record
        # trainer.log_dir broadcasts from rank 0 (a collective): every rank must ask for it,
        # or rank 0 blocks (or pairs with the next unrelated collective) under DDP.
        folder = run_dir(trainer)
        if trainer.is_global_zero:
            if final and self.save_outputs:
                atomic_save_npz(folder / "evaluation_outputs.npz", per_sample_outputs(probs, labels))
            path = atomic_write_json(folder / self.filename, record)
            summary = ", ".join(
                f"{k}={v:.2f}" for k, v in metrics.items() if isinstance(v, float) and k not in RENAMED_KEYS
            )
            rank_zero_info(f"[{stage} epoch {trainer.current_epoch}] {summary} -> {path}")


def _check_subset(name: str, size: int | float | None) -> None:
    valid = (
        size is None
        or (isinstance(size, int) and not isinstance(size, bool) and size >= 1)
        or (isinstance(size, float) and 0.0 < size <= 1.0)
    )
    if not valid:
        raise ValueError(f"{name} must be a fraction in (0, 1], a number of samples >= 1, or None; got {size!r}")


def subset_size(total: int, size: int | float | None) -> int:
    """How many of ``total`` samples a ``remain_subset`` / ``test_subset`` of ``size`` evaluates:
    a fraction rounded up, a count, or all of them.

    Example:
        >>> subset_size(45_000, 0.1), subset_size(45_000, 1000), subset_size(500, 1000), subset_size(500, None)
        (4500, 1000, 500, 500)
    """
    count = total if size is None else math.ceil(size * total) if isinstance(size, float) else size
    return min(count, total)


def _subset_indices(total: int, size: int | float | None, seed: int) -> Tensor | None:
    """Sorted indices of a seeded subset of :func:`subset_size` samples out of ``total``;
    ``None`` when that is every sample."""
    count = subset_size(total, size)
    if count >= total:
        return None
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:count].sort().values


def _reaches_max_steps(trainer: pl.Trainer) -> bool:
    return trainer.max_steps is not None and trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps


def _backbone(pl_module: pl.LightningModule) -> nn.Module:
    backbone = getattr(pl_module, "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise ValueError("UnlearningEvaluator with reference_ckpt needs a module with a `backbone` attribute")
    return backbone


def _splits(trainer: pl.Trainer) -> dict[str, tuple[Images, Tensor]]:
    return unlearning_data(trainer, "UnlearningEvaluator").evaluation_splits()
