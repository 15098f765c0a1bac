"""``UnlearningEvaluator``: forget / remaining / test accuracy, membership attacks, gaps to Retrain.

Exact under DDP by construction (docs/design.md §4): each split is forwarded in fixed global
batches shared out across ranks, through the LightningModule itself, and gathered back in
order (:func:`~natmu_lightning.callbacks.distributed.sharded_logits`), so every rank holds the
outputs of a single device; the metrics (and the attacks' fits) are computed once, on rank 0,
and broadcast. During ``fit`` rank 0's buffers (batch-norm statistics) are broadcast first, so
an evaluation during a DDP fit is that of the weights and buffers the checkpoint holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor, nn

from natmu_lightning.bank.file import read_bank
from natmu_lightning.callbacks.bank_scores import BankScores
from natmu_lightning.callbacks.distributed import on_rank_zero, sharded_logits, sync_buffers_from_rank_zero
from natmu_lightning.checkpoints import backbone_with_weights, check_reference_request
from natmu_lightning.data.contracts import unlearning_data
from natmu_lightning.io import atomic_save_npz, atomic_write_json, check_file_name, json_ready, run_dir
from natmu_lightning.metrics import functional as MF
from natmu_lightning.metrics import schedule
from natmu_lightning.metrics.bank import ReferenceBankMetric, bank_per_sample
from natmu_lightning.metrics.evaluation import (
    EvaluationMetric,
    EvaluationOutputs,
    check_attacks,
    compute_metrics,
    logged_names,
)
from natmu_lightning.metrics.names import RENAMED_KEYS
from natmu_lightning.metrics.schedule import Splits
from natmu_lightning.metrics.splits import ATTACKS, METRICS, per_sample_outputs


class UnlearningEvaluator(Callback):
    """Reports forgetting, remaining and test accuracy, membership attacks and gaps to Retrain.

    Runs at the end of every ``every_n_epochs``-th training epoch (and always after
    the last one), at the end of ``validate`` and of ``test``; needs a datamodule with
    ``evaluation_splits()`` (:class:`~natmu_lightning.data.ForgetRemainDataModule`).

    What it reports is an ordered list of metric objects (the built-in
    :data:`~natmu_lightning.metrics.splits.METRICS`, each documented there, then
    ``extra_metrics``; :mod:`natmu_lightning.metrics.evaluation`), computed from every split's
    outputs: at every evaluation forget / remaining / test accuracy (``forget_test_acc`` too
    for full-class and sub-class requests, whose ``test_acc`` leaves the forgotten kind's test
    samples out), the paper's entropy MIA (``mia_entropy``) and ``reference_free_gap``, the
    judge without a Retrain (:mod:`natmu_lightning.metrics.reference_free`); at the final
    evaluation (every time with ``attacks_every_epoch``) the slower ``attacks``: ``mia_svc_*``
    (the SVC shadow protocol, % of the forget set predicted NON-member) and ``mia_loss_cv`` (a
    loss attack's cross-validated accuracy, 50 is ideal); with ``reference_ckpt`` (Retrain,
    same backbone) ``kl_to_reference``, ``js_to_reference``, ``avg_gap`` and ``tug_of_war``,
    and the reference's own numbers, computed once, as ``reference``; with ``reference_bank``
    (a bank of Retrains, ``natmu-lightning-bank``) ``bank_{forget,remain,test}_outside``,
    ``_divergence`` and ``_shift``, where the model's per-example scores fall among the
    members' (:mod:`natmu_lightning.metrics.bank`).

    Each metric's values are logged under the keys its ``keys`` name (:attr:`logged_keys`;
    built-in: :data:`~natmu_lightning.metrics.splits.LOG_KEYS`, where ``retain/acc`` is the old
    name of ``remain/acc``). ``gap/avg`` works as a ``ModelCheckpoint`` monitor (mode ``min``)
    to keep the checkpoint closest to Retrain; a checkpoint callback that monitors an evaluator
    key must save every ``every_n_epochs`` epochs or a multiple of that (else a ``ValueError``
    before training). Choosing a checkpoint by ``gap/avg`` (or any evaluator key) selects on the
    test set, the forget set and Retrain: report such a number as selected on them, or select
    on a separate validation forget request. This callback is the one owner of ``test/acc``
    (the module's own test loop then logs only ``test/loss``). Everything (plus the reference's
    numbers, world size, effective batch size and seed) goes to ``unlearning_metrics.json`` in
    the log dir.

    Every record also says whether the run has **collapsed** rather than unlearned
    (``collapsed``, ``collapse_reason``; :func:`~natmu_lightning.metrics.functional.collapse_reason`):
    an accuracy (forget, remaining or test) that is not finite, or test or remaining accuracy below 80% of the original
    model's. The original's metrics are ``original_metrics``, which the unlearning record
    hands over when it has measured them at the fit's start (``metrics_before``); without
    them only the first test applies. ``stop_on_collapse`` ends the fit at the first
    evaluation that finds a collapse (off by default).

    Args:
        reference_ckpt: the Retrain of this forget request (same backbone) to compare with.
        every_n_epochs: evaluate every n training epochs.
        batch_size: samples per forward pass (the unit of work split across ranks).
        filename: name of the metrics file in the log dir.
        remain_subset: during training, evaluate the remaining set (accuracy and the MIA's
            members) on a fixed seeded subset: a fraction (a float in (0, 1]) or a number of
            samples (an int); ``None``: all of it. The final evaluation always uses all of it, and
            so does every one when a callback monitors an evaluator key (it compares them). The
            default, a tenth, keeps an evaluation near a tenth of a NatMU epoch or less.
        test_subset: the same for the test set (the MIA's non-members). The forget set,
            and for class requests the forgotten kind's test samples, are always whole.
        attacks: which slower attacks to run, by name (``("svc", "loss_cv")``, and the
            ``attack`` names of ``extra_metrics``).
        attacks_every_epoch: run ``attacks`` at every evaluation, not only the final one.
        seed: seed of the remaining subset and of the loss attack's folds.
        save_outputs: at the final evaluation also write ``evaluation_outputs.npz``
            (per-sample entropy and loss of every split; with ``reference_bank`` also the forget
            set's ``bank_forget_score``, ``_mean``, ``_std`` and ``_z``) for reports and plots.
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
        extra_metrics: metrics of your own, computed after the built-in ones (and for the
            reference too, unless they need it), recorded and logged under their ``keys``.
        reference_bank: a bank of Retrains of this forget request and backbone (the
            ``bank.json`` of ``natmu-lightning-bank``, or its folder): adds
            :class:`~natmu_lightning.metrics.bank.ReferenceBankMetric`, the members scored once
            (:class:`~natmu_lightning.callbacks.bank_scores.BankScores`). Fewer than 2 members,
            a changed or unfitting member file, or another forget set: a ``ValueError`` before
            any training or evaluation.
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
        extra_metrics: Sequence[EvaluationMetric] = (),
        reference_bank: str | None = None,
    ) -> None:
        if every_n_epochs < 1 or batch_size < 1:
            raise ValueError("every_n_epochs and batch_size must be >= 1")
        schedule.check_subset("remain_subset", remain_subset)
        schedule.check_subset("test_subset", test_subset)
        check_file_name("UnlearningEvaluator filename", filename)
        self.reference_bank = reference_bank
        self.bank_scores = None if reference_bank is None else BankScores(read_bank(reference_bank), seed, batch_size)
        bank_metrics = (ReferenceBankMetric(),) if self.bank_scores is not None else ()
        self.metrics = (*METRICS, *bank_metrics, *extra_metrics)
        check_attacks(self.metrics, attacks)
        self._log_keys = logged_names(self.metrics)
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
        # keyed by (evaluates the full remaining set, attacks run): a final evaluation's
        # reference numbers include its attacks even after per-epoch ones without them;
        # each entry holds the reference's metrics and its outputs on the splits metrics read
        self._reference_cache: dict[tuple[bool, tuple[str, ...]], tuple[dict[str, float], dict[str, Tensor]]] = {}
        self._evaluated_step: int | None = None
        self._last_was_final = False
        # set per fit: whether a callback compares evaluations (then every one uses the full sets)
        self._full_sets_every_time = False
        self._validation = schedule.ValidationLoopSwitch()
        # the training subsets of the last splits seen: (splits, their subsets)
        self._subsets: tuple[Splits, Splits] | None = None

    @property
    def logged_keys(self) -> frozenset[str]:
        """The keys this callback logs (the module leaves them to it)."""
        return frozenset(self._log_keys.values())

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            schedule.check_checkpoint_monitors(trainer, self.logged_keys, self.every_n_epochs)
            monitors = [getattr(callback, "monitor", None) for callback in trainer.callbacks]  # type: ignore[attr-defined]  # Lightning's
            self._full_sets_every_time = self._uses_subsets() and any(m in self.logged_keys for m in monitors)
            if self._full_sets_every_time:
                rank_zero_info(
                    "UnlearningEvaluator: a callback monitors an evaluator key, so every evaluation uses the whole "
                    "remaining and test sets (comparable from epoch to epoch)"
                )
            self._validation.switch_off(trainer, monitors, keep=self.lightning_validation)
        if self.reference_ckpt is not None and self.reference_metrics is None:
            # Fail on a bad reference before any training, not at the first epoch's end.
            backbone_with_weights(pl_module, self.reference_ckpt, "reference_ckpt", self.reference_prefix)
            check_reference_request(self.reference_ckpt, trainer.datamodule)  # type: ignore[attr-defined]  # Lightning's
        if self.bank_scores is not None:
            self.bank_scores.check(trainer, pl_module)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A request resolved with the original model (HardestForget, a further request) is
        # resolved after the callbacks' setup: its forget set and splits are checked here, before training.
        _splits(trainer)  # built now (then cached): an empty split is refused before the first epoch
        if self.reference_ckpt is not None:
            check_reference_request(self.reference_ckpt, trainer.datamodule)  # type: ignore[attr-defined]  # Lightning's
        if self.bank_scores is not None:
            self.bank_scores.check_request(trainer)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._validation.restore(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._validation.restore(trainer)  # Lightning skips the callbacks' teardown when a fit raises

    def _uses_subsets(self) -> bool:
        return self.remain_subset is not None or self.test_subset is not None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        # max_epochs is -1 (unlimited) when only max_steps bounds the run: no epoch is "last"
        # then, and on_fit_end catches the final one.
        last = trainer.max_epochs is not None and trainer.max_epochs > 0 and epoch >= trainer.max_epochs
        max_steps = trainer.max_steps is not None and trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps
        final = last or trainer.should_stop or max_steps
        if epoch % self.every_n_epochs == 0 or final:
            self._run(trainer, pl_module, "fit", log=True, final=final)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A run stopped between epochs' ends (max_steps, a callback's should_stop) is evaluated
        # here, where the strategy still holds the module on its device and every rank is alive.
        self.final_metrics(trainer, pl_module)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Reached without on_train_end only when the fit loop had nothing to do (--ckpt_path of a finished run);
        # Lightning's teardown has moved the module back to the CPU: the evaluation runs there (the module's device).
        self.final_metrics(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "validate" and not trainer.sanity_checking:
            self._run(trainer, pl_module, "validate", log=True, final=True)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._run(trainer, pl_module, "test", log=True, final=True)

    # ------------------------------------------------------------------ work
    def evaluate(self, trainer: pl.Trainer, model: nn.Module, final: bool = True) -> dict[str, float]:
        """Metrics of ``model`` on the datamodule's splits (those that need no reference),
        identical on every rank.

        ``final=False`` (an evaluation during training) uses the remaining subset and
        skips the slower attacks unless configured otherwise.
        """
        return compute_metrics(self._metrics_run(self._attacks_run(final)), self._outputs(trainer, model, final))

    def _attacks_run(self, final: bool) -> tuple[str, ...]:
        return self.attacks if (final or self.attacks_every_epoch) else ()

    def _metrics_run(self, attacks: Sequence[str]) -> list[EvaluationMetric]:
        """The metrics computed when the slower ``attacks`` run, in order."""
        return [metric for metric in self.metrics if metric.attack is None or metric.attack in attacks]

    def _outputs(self, trainer: pl.Trainer, model: nn.Module, final: bool) -> EvaluationOutputs:
        splits = whole = _splits(trainer)
        # From the whole remaining set: a rare class may be missing from its subset.
        whole_classes = not bool(torch.isin(splits["forget"][1].unique(), splits["remain"][1]).any())
        if not final and not self._full_sets_every_time:
            # drawn once for a given splits object (the datamodule prepares its splits once per run)
            if self._subsets is None or self._subsets[0] is not splits:
                subsets = schedule.training_subsets(splits, self.remain_subset, self.test_subset, self.seed)
                self._subsets = (splits, subsets)
            splits = self._subsets[1]
        probs = {
            name: sharded_logits(model, images, self.batch_size, trainer).softmax(1)
            for name, (images, _) in splits.items()
        }
        labels = {name: targets for name, (_, targets) in splits.items()}
        scores = self.bank_scores
        bank = None if scores is None else scores.outputs(trainer, model, whole, probs["forget"])
        return EvaluationOutputs(probs, labels, self.seed, whole_classes, bank=bank)

    def _reference(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, final: bool
    ) -> tuple[dict[str, float], dict[str, Tensor]]:
        """The reference's metrics (computed once per kind of evaluation) and its outputs on the
        splits the metrics read (``reference_splits``)."""
        attacks = self._attacks_run(final)
        key = (final or self._full_sets_every_time or not self._uses_subsets(), attacks)
        if key not in self._reference_cache:
            assert self.reference_ckpt is not None  # only called with a reference
            check_reference_request(self.reference_ckpt, trainer.datamodule)  # type: ignore[attr-defined]  # Lightning's
            reference = backbone_with_weights(pl_module, self.reference_ckpt, "reference_ckpt", self.reference_prefix)
            outputs = self._outputs(trainer, reference, final)
            metrics = self._metrics_run(attacks)
            read = {split: outputs.probs[split] for metric in metrics for split in metric.reference_splits}
            self._reference_cache[key] = (on_rank_zero(trainer, lambda: compute_metrics(metrics, outputs)), read)
        return self._reference_cache[key]

    def _measure(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: EvaluationOutputs,
        final: bool,
        attacks: Sequence[str],
    ) -> dict[str, Any]:
        """Every metric run with ``attacks`` on ``outputs``, against the reference when there is
        one; computed on rank 0 and shared (a collective under DDP)."""
        if self.reference_ckpt is not None:
            reference, reference_probs = self._reference(trainer, pl_module, final)
            outputs = replace(outputs, reference_probs=reference_probs, reference_metrics=reference)
        return on_rank_zero(trainer, lambda: compute_metrics(self._metrics_run(attacks), outputs))

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
        outputs = self._outputs(trainer, backbone_with_weights(pl_module, path, what, prefix), final=True)
        return json_ready(self._measure(trainer, pl_module, outputs, True, attacks))

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
        outputs = self._outputs(trainer, pl_module, final)
        metrics = self._measure(trainer, pl_module, outputs, final, self._attacks_run(final))
        if self.reference_ckpt is not None:
            self.reference_metrics = self._reference(trainer, pl_module, final)[0]
        if log:
            # Identical on every rank: averaging across ranks changes nothing, monitors (gap/avg) agree.
            logged = {self._log_keys[k]: float(v) for k, v in metrics.items() if k in self._log_keys}
            pl_module.log_dict(logged, sync_dist=trainer.world_size > 1)
        self._evaluated_step, self._last_was_final = trainer.global_step, final
        datamodule = trainer.datamodule  # type: ignore[attr-defined]  # set by Lightning's data connector
        per_device = getattr(datamodule, "batch_size", None)
        effective = None if per_device is None else per_device * trainer.world_size * trainer.accumulate_grad_batches
        record = {
            **metrics,
            "stage": stage,
            "final": final,
            "epoch": trainer.current_epoch,
            "global_step": trainer.global_step,
            "world_size": trainer.world_size,
            "effective_batch_size": effective,
            "seed": getattr(datamodule, "seed", None),
            "remain_evaluated": int(outputs.labels["remain"].numel()),
            "test_evaluated": int(outputs.labels["test"].numel()),
        }
        if self.reference_metrics is not None:
            record["reference"] = dict(self.reference_metrics)
            record["reference_ckpt"] = str(self.reference_ckpt)
        if self.bank_scores is not None:
            record["reference_bank"] = str(self.bank_scores.bank.path)
            record["reference_bank_members"] = len(self.bank_scores.bank.members)
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
                arrays = per_sample_outputs(outputs.probs, outputs.labels)
                if outputs.bank is not None:
                    arrays.update(bank_per_sample(outputs.bank, "forget"))
                atomic_save_npz(folder / "evaluation_outputs.npz", arrays)
            path = atomic_write_json(folder / self.filename, record)
            summary = ", ".join(
                f"{k}={v:.2f}" for k, v in metrics.items() if isinstance(v, float) and k not in RENAMED_KEYS
            )
            rank_zero_info(f"[{stage} epoch {trainer.current_epoch}] {summary} -> {path}")


def _splits(trainer: pl.Trainer) -> Splits:
    return schedule.measured_splits(unlearning_data(trainer, "UnlearningEvaluator").evaluation_splits())
