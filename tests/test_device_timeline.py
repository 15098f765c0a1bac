"""Runs under an accelerator's device timeline, replayed on the CPU.

``tests/accelerator_timeline.py`` reports the strategy's root device as ``meta`` while
Lightning runs the setup hooks (before the module is moved) and after teardown (when
``on_fit_end`` runs), as a GPU strategy's would read ``cuda:0`` while the weights are on
the CPU. Anything that sends a model's inputs to the strategy's device instead of the
model's own fails here as it would on a GPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from natmu_lightning import ForgetRemainDataModule, NatMUModule, SmallCNN
from natmu_lightning.checkpoints import final_linear, read_state_dict
from natmu_lightning.cli import main
from natmu_lightning.data import ClassForget, Digits
from natmu_lightning.natmu.hybrids import build_hybrid_plan
from natmu_lightning.predict import predict_logits
from tests.tiny_runs import (
    DIGITS_ORIGINAL,
    DIGITS_RETRAIN,
    digits_args,
    digits_run_folder,
    newest_version,
    quiet_trainer,
)

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
TIMELINE = ["--trainer.strategy", '{"class_path": "tests.accelerator_timeline.AcceleratorTimeline"}']
#: what differs between a fit's record and a validate's of the same checkpoint, by design (the
#: collapse verdict is judged against the original's metrics, which a fit's record measures and
#: a validate does not)
RUN_FIELDS = ("stage", "epoch", "global_step", "collapsed", "collapse_reason")


def metrics_file(run_folder: Path) -> dict:
    """The ``unlearning_metrics.json`` of the run folder's newest log version."""
    record = json.loads((newest_version(run_folder) / "unlearning_metrics.json").read_text())
    return {key: value for key, value in record.items() if key not in RUN_FIELDS}


@pytest.fixture(scope="module")
def digits_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The original and Retrain configs (2 epochs) fitted under the accelerator timeline."""
    root = tmp_path_factory.mktemp("timeline")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        for name in ("original", "retrain"):
            main(["fit", *digits_args(name), "--trainer.max_epochs", "2", *TIMELINE, *QUIET])
    return root


def natmu_args(runs: Path, *extra: str, method: str = "natmu") -> list[str]:
    return [
        *digits_args(method),
        *TIMELINE,
        *QUIET,
        "--model.init_args.original_ckpt",
        str(runs / DIGITS_ORIGINAL),
        "--evaluator.reference_ckpt",
        str(runs / DIGITS_RETRAIN),
        *extra,
    ]


def test_original_and_retrain_fit_under_the_timeline(digits_runs: Path, tmp_path: Path, monkeypatch) -> None:
    """The same weights, to the bit, as the same fits under the default CPU strategy."""
    monkeypatch.chdir(tmp_path)
    for name, path in (("original", DIGITS_ORIGINAL), ("retrain", DIGITS_RETRAIN)):
        main(["fit", *digits_args(name), "--trainer.max_epochs", "2", *QUIET])
        timeline, default = read_state_dict(digits_runs / path), read_state_dict(tmp_path / path)
        assert timeline.keys() == default.keys()
        assert all(torch.equal(timeline[key], default[key]) for key in default), name


@pytest.mark.usefixtures("in_tmp_path")
def test_natmu_fit_rerun_and_early_stop_match_validate(digits_runs: Path, tmp_path: Path, monkeypatch) -> None:
    run = tmp_path / digits_run_folder("natmu")
    main(["fit", *natmu_args(digits_runs, "--trainer.max_epochs", "2")])
    first = metrics_file(run)

    # fit --ckpt_path on the finished run: the fit loop has nothing to do and the evaluator
    # runs in on_fit_end, after teardown moved the module back to the CPU.
    main(["fit", *natmu_args(digits_runs, "--trainer.max_epochs", "2", "--ckpt_path", "last")])
    rerun = metrics_file(run)
    main(["validate", *natmu_args(digits_runs, "--ckpt_path", str(run / "checkpoints" / "last.ckpt"))])
    validated = metrics_file(run)
    assert rerun == validated == first
    assert validated["final"] is True and {"avg_gap", "mia_svc_entropy", "mia_loss_cv"} <= set(validated)

    # A fit stopped mid-epoch by max_steps: its final record is that of the checkpoint it saved.
    early = tmp_path / "early"
    early.mkdir()
    monkeypatch.chdir(early)
    main(["fit", *natmu_args(digits_runs, "--trainer.max_steps", "7")])
    stopped = metrics_file(early / digits_run_folder("natmu"))
    checkpoint = early / digits_run_folder("natmu") / "checkpoints" / "last.ckpt"
    assert torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"] == 7
    main(["validate", *natmu_args(digits_runs, "--ckpt_path", str(checkpoint))])
    assert metrics_file(early / digits_run_folder("natmu")) == stopped
    assert stopped != first


class HeadAtTrainStart(pl.Callback):
    """The classifier's weights and bias once the strategy has placed the module."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        head = final_linear(pl_module.backbone)
        self.weight, self.bias = head.weight.detach().clone(), head.bias.detach().clone()


def test_full_class_plan_ranks_with_the_original_head_then_reinitialises(digits_runs: Path, tmp_path: Path) -> None:
    """The rocket recipe (ClassForget + reinit_classifier): as the authors' class-wise/natmu.py,
    the natural hybrids come from the original model, then init_linear re-draws the weights."""
    original = str(digits_runs / DIGITS_ORIGINAL)
    module = NatMUModule(SmallCNN(num_classes=10), original_ckpt=original, reinit_classifier=True)
    datamodule = ForgetRemainDataModule(source=Digits(noise_std=0.25), forget=ClassForget([3]), batch_size=64, seed=0)
    head = HeadAtTrainStart()
    from tests.accelerator_timeline import AcceleratorTimeline

    trainer = pl.Trainer(
        strategy=AcceleratorTimeline(),
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
        callbacks=[head],
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=datamodule)

    # Independent re-statement: the original checkpoint's ranking, the same seeded draw.
    reference = SmallCNN(num_classes=10)
    reference.load_state_dict(read_state_dict(original))
    data, forget, remain = datamodule.data.train, datamodule.forget_indices, datamodule.remain_indices
    probs = predict_logits(reference, data.images[forget]).softmax(1)
    expected = build_hybrid_plan(
        forget,
        data.targets[forget],
        probs,
        remain,
        data.targets[remain],
        k=4,
        generator=torch.Generator().manual_seed(0),
    )
    assert expected.keys() == datamodule.hybrid_plan.keys()
    for key in expected:
        assert torch.equal(expected[key], datamodule.hybrid_plan[key]), key
    original_head = final_linear(reference)
    assert torch.equal(head.bias, original_head.bias)
    assert not torch.equal(head.weight, original_head.weight)


@pytest.mark.usefixtures("in_tmp_path")
@pytest.mark.parametrize("method", ["natmu", "rl"])
def test_bf16_mixed_fit_on_cpu(digits_runs: Path, tmp_path: Path, method: str) -> None:
    """bf16-mixed trains with float32 inputs (hybrids mixed from uint8 in float32, autocast in
    the step), and the evaluator's numbers come from a float32 forward."""
    cli = main(
        [
            "fit",
            *natmu_args(digits_runs, "--trainer.max_epochs", "1", "--trainer.precision", "bf16-mixed", method=method),
        ]
    )
    assert cli.trainer.precision == "bf16-mixed"
    record = metrics_file(tmp_path / digits_run_folder(method))
    assert all(record[key] is not None for key in ("forget_acc", "retain_acc", "test_acc", "mia_entropy", "avg_gap"))
    assert all(p.dtype == torch.float32 for p in cli.model.parameters())


class InputDtype(pl.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.dtype = batch["image"].dtype


@pytest.mark.parametrize(
    ("precision", "dtype"), [("bf16-mixed", torch.float32), ("bf16-true", torch.bfloat16), ("64-true", torch.float64)]
)
def test_training_inputs_follow_the_precision(digits_runs: Path, tmp_path: Path, precision: str, dtype) -> None:
    """Lightning casts a batch's floats before the transfer hooks, while our images are still
    uint8: the datamodule casts them after mixing instead."""
    original = str(digits_runs / DIGITS_ORIGINAL)
    spy = InputDtype()
    trainer = quiet_trainer(tmp_path, max_steps=1, precision=precision, callbacks=[spy])
    trainer.fit(
        NatMUModule(SmallCNN(num_classes=10), original_ckpt=original), datamodule=ForgetRemainDataModule(batch_size=64)
    )
    assert spy.dtype == dtype


def test_options_the_method_cannot_honour_fail_before_training(digits_runs: Path, tmp_path: Path) -> None:
    def refused(backbone: torch.nn.Module, original: str, **trainer_options) -> str:
        trainer = quiet_trainer(tmp_path, limit_val_batches=None, max_epochs=1, **trainer_options)
        module = NatMUModule(backbone, original_ckpt=original)
        before = {k: v.clone() for k, v in module.state_dict().items()}
        try:
            with pytest.raises(ValueError) as raised:
                trainer.fit(module, datamodule=ForgetRemainDataModule())
        finally:
            if torch.distributed.is_initialized():  # the 1-process "ddp" run below
                torch.distributed.destroy_process_group()
        assert trainer.global_step == 0
        assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
        return str(raised.value)

    original = str(digits_runs / DIGITS_ORIGINAL)
    assert "precision '16-true' cannot train" in refused(SmallCNN(num_classes=10), original, precision="16-true")
    linear = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    torch.save(linear.state_dict(), tmp_path / "linear.pt")
    message = refused(linear, str(tmp_path / "linear.pt"), strategy="ddp", sync_batchnorm=True)
    assert "sync_batchnorm=True but the backbone Sequential has no BatchNorm layer" in message


def test_compiled_module_trains_and_evaluates(digits_runs: Path, tmp_path: Path) -> None:
    """Lightning's own torch.compile path (``trainer.fit(torch.compile(module))``), here with
    dynamo's eager backend (no C++ build on CPU): the step compiles without per-step recompiles
    and the evaluator runs the compiled forward to the same numbers."""
    from natmu_lightning import UnlearningEvaluator

    original = str(digits_runs / DIGITS_ORIGINAL)
    results = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        torch._dynamo.reset()
        evaluator = UnlearningEvaluator(attacks=())
        trainer = quiet_trainer(tmp_path, max_epochs=1, callbacks=[evaluator])
        module = NatMUModule(SmallCNN(num_classes=10), original_ckpt=original)
        with torch._dynamo.config.patch(recompile_limit=4, fail_on_recompile_limit_hit=True):
            trainer.fit(
                torch.compile(module, backend="eager") if compiled else module,
                datamodule=ForgetRemainDataModule(batch_size=64),
            )
        results[compiled] = evaluator.last_metrics
    for key in ("forget_acc", "retain_acc", "test_acc", "mia_entropy"):
        assert results[True][key] == pytest.approx(results[False][key], abs=1.0), key
