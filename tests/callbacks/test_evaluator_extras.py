"""Evaluator options: the slower attacks, divergences, the training subsets, Lightning's validation loop,
best-gap checkpoints."""

import math

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from natmu_lightning import UnlearningEvaluator
from natmu_lightning.metrics import functional as MF
from natmu_lightning.metrics.splits import split_metrics
from natmu_lightning.predict import predict_logits
from tests.tiny_runs import make_dm, make_model, make_trainer, read_csv, read_json


def other_weights():
    """The evaluated architecture with different weights (a stand-in for Retrain)."""
    model = make_model()
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.5 * torch.randn_like(parameter))
    return model


def test_attacks_and_divergences_match_direct_computation(tmp_path):
    reference_model = other_weights()
    reference_path = tmp_path / "reference.pt"
    torch.save(reference_model.backbone.state_dict(), reference_path)
    model = make_model()
    evaluator = UnlearningEvaluator(reference_ckpt=str(reference_path), batch_size=16)
    dm = make_dm()
    trainer = make_trainer(tmp_path, [evaluator])
    trainer.validate(model, datamodule=dm)
    record = read_json(trainer)

    splits = dm.evaluation_splits()
    probs = {name: predict_logits(model, images).softmax(dim=1) for name, (images, _) in splits.items()}
    labels = {name: targets for name, (_, targets) in splits.items()}
    ref_forget = predict_logits(reference_model, splits["forget"][0]).softmax(dim=1)
    for feature in ("confidence", "entropy", "m_entropy"):
        expected = MF.svc_mia(
            probs["remain"], labels["remain"], probs["test"], labels["test"], probs["forget"], labels["forget"], feature
        )
        assert record[f"mia_svc_{feature}"] == pytest.approx(expected, abs=1e-9)
    assert record["kl_to_reference"] == pytest.approx(MF.kl_divergence(ref_forget, probs["forget"]), rel=1e-6)
    assert record["js_to_reference"] == pytest.approx(MF.js_divergence(ref_forget, probs["forget"]), rel=1e-6)
    assert 0 <= record["js_to_reference"] <= math.log(2)
    assert record["tug_of_war"] == pytest.approx(MF.tug_of_war(record, record["reference"]))
    # the loss attack on the forget set against the test set (a random request has no
    # forgotten-class test samples), up to 5 folds, seeded by the run's seed
    assert "forget_test" not in splits
    forget_losses = MF.sample_losses(probs["forget"], labels["forget"])
    test_losses = MF.sample_losses(probs["test"], labels["test"])
    folds = min(5, forget_losses.numel(), test_losses.numel())
    expected_loss_cv = MF.loss_mia_cv(forget_losses, test_losses, n_splits=folds, seed=dm.seed)
    assert record["mia_loss_cv"] == pytest.approx(expected_loss_cv, abs=1e-9)
    assert record["effective_batch_size"] == dm.batch_size and record["seed"] == dm.seed


def test_remain_subset_during_training_full_at_the_end(tmp_path):
    seen = []

    class Spy(UnlearningEvaluator):
        def _run(self, trainer, pl_module, stage, log, final=True):
            super()._run(trainer, pl_module, stage, log, final)
            seen.append((final, self.last_metrics["remain_evaluated"], "mia_svc_entropy" in self.last_metrics))

    dm = make_dm()
    trainer = make_trainer(tmp_path, [Spy(remain_subset=10, batch_size=16)], max_epochs=3, limit_train_batches=1)
    trainer.fit(make_model(), datamodule=dm)
    full = dm.remain_indices.numel()
    assert seen == [(False, 10, False), (False, 10, False), (True, full, True)]


class SubsetSpy(UnlearningEvaluator):
    """Records (final, remaining evaluated, test evaluated) of every evaluation."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = []

    def _run(self, trainer, pl_module, stage, log, final=True):
        super()._run(trainer, pl_module, stage, log, final)
        record = self.last_metrics
        self.seen.append((final, record["remain_evaluated"], record["test_evaluated"]))


def test_default_training_evaluations_use_a_tenth_of_remaining_and_test(tmp_path):
    evaluator = SubsetSpy(batch_size=16)
    dm = make_dm()
    model = make_model()
    make_trainer(tmp_path, [evaluator], max_epochs=2, limit_train_batches=1).fit(model, datamodule=dm)
    splits = dm.evaluation_splits()
    remain, test = splits["remain"][1].numel(), splits["test"][1].numel()
    assert remain > 10 and test > 10  # so that a tenth is a strict subset
    tenth = math.ceil(0.1 * remain), math.ceil(0.1 * test)
    assert evaluator.seen == [(False, *tenth), (True, remain, test)]

    # The numbers of a training evaluation: the same model on the documented seeded subsets
    # (remaining: seed, test: seed + 1), the forget set whole.
    subsets = dict(splits)
    for offset, (name, count) in enumerate(zip(("remain", "test"), tenth)):
        keep = torch.randperm(splits[name][1].numel(), generator=torch.Generator().manual_seed(offset))[:count]
        images, targets = splits[name]
        subsets[name] = (images[keep.sort().values], targets[keep.sort().values])
    probs = {name: predict_logits(model, images).softmax(dim=1) for name, (images, _) in subsets.items()}
    labels = {name: targets for name, (_, targets) in subsets.items()}
    got = evaluator.evaluate(model.trainer, model, final=False)
    expected = split_metrics(probs, labels, whole_classes=False)
    assert got.keys() == expected.keys()
    for key in expected:
        assert got[key] == pytest.approx(expected[key], abs=1e-9, nan_ok=True), key


def test_subset_sizes_as_counts_fractions_or_everything(tmp_path):
    evaluator = SubsetSpy(batch_size=16, remain_subset=7, test_subset=None)
    dm = make_dm()
    make_trainer(tmp_path, [evaluator], max_epochs=2, limit_train_batches=1).fit(make_model(), datamodule=dm)
    splits = dm.evaluation_splits()
    full = (splits["remain"][1].numel(), splits["test"][1].numel())
    assert evaluator.seen == [(False, 7, full[1]), (True, *full)]


def test_a_monitor_on_an_evaluator_key_makes_every_evaluation_whole(tmp_path):
    """A checkpoint chosen by gap/avg compares epochs with each other (and with the final,
    whole evaluation): they must all measure the same samples."""
    reference = tmp_path / "reference.pt"
    torch.save(other_weights().backbone.state_dict(), reference)
    evaluator = SubsetSpy(reference_ckpt=str(reference), batch_size=16)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="gap/avg", mode="min")
    dm = make_dm()
    trainer = make_trainer(
        tmp_path, [evaluator, checkpoint], max_epochs=2, limit_train_batches=1, enable_checkpointing=True
    )
    trainer.fit(make_model(), datamodule=dm)
    splits = dm.evaluation_splits()
    full = (splits["remain"][1].numel(), splits["test"][1].numel())
    assert evaluator.seen == [(False, *full), (True, *full)]


@pytest.mark.parametrize("value", [0, -3, 0.0, 1.5, True, "all"])
def test_bad_subset_sizes_are_refused(value):
    for name in ("remain_subset", "test_subset"):
        with pytest.raises(ValueError, match=name):
            UnlearningEvaluator(**{name: value})


@pytest.mark.parametrize("keep", ["lightning_validation", "val_monitor", None])
def test_lightnings_validation_loop_is_off_during_fit_unless_asked(tmp_path, keep):
    """The evaluator measures the test split; Lightning's validation loop would do it again."""
    callbacks = [UnlearningEvaluator(batch_size=16, lightning_validation=keep == "lightning_validation")]
    if keep == "val_monitor":
        callbacks.append(ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/acc", mode="max"))
    trainer = make_trainer(
        tmp_path, callbacks, max_epochs=2, limit_train_batches=1, limit_val_batches=1.0, enable_checkpointing=True
    )
    model = make_model()
    trainer.fit(model, datamodule=make_dm())
    validated = [r for r in read_csv(trainer) if r.get("val/acc")]
    assert len(validated) == (0 if keep is None else 2)
    assert trainer.limit_val_batches == 1.0  # restored for what follows
    metrics = trainer.validate(model, datamodule=make_dm(), verbose=False)[0]
    assert "val/loss" in metrics and read_json(trainer)["stage"] == "validate"


class FailsInSecondEpoch(pl.Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            raise RuntimeError("boom")


def test_a_failed_fit_gives_the_validation_loop_back(tmp_path):
    trainer = make_trainer(tmp_path, [UnlearningEvaluator(batch_size=16), FailsInSecondEpoch()], max_epochs=2)
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(make_model(), datamodule=make_dm())
    assert trainer.limit_val_batches == 1.0


def test_a_validation_schedule_of_the_users_keeps_the_loop_and_the_checkpoints(tmp_path):
    """With check_val_every_n_epoch other than 1, ModelCheckpoint saves after validation only:
    switching validation off would silently stop every checkpoint."""
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = make_trainer(
        tmp_path,
        [UnlearningEvaluator(batch_size=16), checkpoint],
        max_epochs=2,
        limit_train_batches=1,
        check_val_every_n_epoch=2,
        enable_checkpointing=True,
    )
    trainer.fit(make_model(), datamodule=make_dm())
    assert [int(r["epoch"]) for r in read_csv(trainer) if r.get("val/acc")] == [1]
    assert (tmp_path / "ckpt" / "last.ckpt").is_file()


def test_reference_prefix_picks_the_reference_network_in_a_users_checkpoint(tmp_path):
    reference = other_weights().backbone.state_dict()
    both = {f"net.{k}": v for k, v in reference.items()} | {f"ema.{k}": v + 1 for k, v in reference.items()}
    torch.save({"state_dict": both}, tmp_path / "user.ckpt")
    with pytest.raises(ValueError, match="several prefixes"):
        make_trainer(tmp_path, [UnlearningEvaluator(reference_ckpt=str(tmp_path / "user.ckpt"))]).validate(
            make_model(), datamodule=make_dm()
        )
    torch.save(reference, tmp_path / "plain.pt")
    records = []
    for path, prefix in ((tmp_path / "user.ckpt", "net"), (tmp_path / "plain.pt", None)):
        trainer = make_trainer(
            tmp_path / str(prefix), [UnlearningEvaluator(reference_ckpt=str(path), reference_prefix=prefix)]
        )
        trainer.validate(make_model(), datamodule=make_dm(), verbose=False)
        records.append(read_json(trainer)["reference"])
    assert records[0] == records[1]


def test_evaluation_splits_are_gathered_once_per_request():
    dm = make_dm()
    dm.setup("fit")
    first = dm.evaluation_splits()
    assert dm.evaluation_splits() is first
    dm.forget_indices, dm.remain_indices = dm.remain_indices[:3], dm.forget_indices
    moved = dm.evaluation_splits()
    assert moved is not first and moved["forget"][1].numel() == 3
    assert torch.equal(moved["remain"][1], first["forget"][1])


def test_gap_is_a_checkpoint_monitor(tmp_path):
    reference = tmp_path / "reference.pt"
    torch.save(other_weights().backbone.state_dict(), reference)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="gap/avg", mode="min", save_top_k=1)
    trainer = make_trainer(
        tmp_path,
        [UnlearningEvaluator(reference_ckpt=str(reference), batch_size=16), checkpoint],
        max_epochs=4,
        limit_train_batches=2,
        enable_checkpointing=True,
    )
    trainer.fit(make_model(lr=3e-2), datamodule=make_dm())
    gaps = [float(r["gap/avg"]) for r in read_csv(trainer) if r.get("gap/avg")]
    assert len(gaps) == 4
    assert checkpoint.best_model_score.item() == pytest.approx(min(gaps))
    assert f"epoch={gaps.index(min(gaps))}" in checkpoint.best_model_path


@pytest.mark.parametrize("remain_subset", [None, 10])
def test_the_final_reference_numbers_include_every_attack_run(tmp_path, remain_subset):
    """Per-epoch evaluations skip the slower attacks; the final one runs them on the model AND
    on the reference, so the record's reference holds Retrain's SVC and loss-attack values."""
    reference = tmp_path / "reference.pt"
    torch.save(other_weights().backbone.state_dict(), reference)
    evaluator = UnlearningEvaluator(reference_ckpt=str(reference), batch_size=16, remain_subset=remain_subset)
    trainer = make_trainer(tmp_path, [evaluator], max_epochs=3, limit_train_batches=1)
    trainer.fit(make_model(), datamodule=make_dm())
    record = read_json(trainer)
    assert record["final"]
    attacks = {"mia_svc_confidence", "mia_svc_entropy", "mia_svc_m_entropy", "mia_loss_cv"}
    assert attacks <= set(record) and attacks <= set(record["reference"])


@pytest.mark.parametrize("lightning_validation", [False, True])
def test_gap_monitor_works_when_the_evaluator_runs_every_second_epoch(tmp_path, lightning_validation):
    """The evaluator runs every second epoch (with Lightning's validation loop every epoch, or
    none). The checkpoint callback, told to save every second epoch too, saves on the evaluated
    epochs only, with that epoch's gap."""
    reference = tmp_path / "reference.pt"
    torch.save(other_weights().backbone.state_dict(), reference)
    checkpoint = ModelCheckpoint(
        dirpath=tmp_path / "ckpt", monitor="gap/avg", mode="min", save_top_k=-1, every_n_epochs=2
    )
    evaluator = UnlearningEvaluator(
        reference_ckpt=str(reference), batch_size=16, every_n_epochs=2, lightning_validation=lightning_validation
    )
    trainer = make_trainer(
        tmp_path, [evaluator, checkpoint], max_epochs=4, limit_train_batches=2, enable_checkpointing=True
    )
    trainer.fit(make_model(lr=3e-2), datamodule=make_dm())
    rows = [r for r in read_csv(trainer) if r.get("gap/avg")]
    assert [int(r["epoch"]) for r in rows] == [1, 3]
    saved = {path.name for path in (tmp_path / "ckpt").iterdir()}
    assert saved == {f"epoch={e}-step={2 * (e + 1)}.ckpt" for e in (1, 3)}
    for row in rows:
        epoch = int(row["epoch"])
        state = torch.load(tmp_path / "ckpt" / f"epoch={epoch}-step={2 * (epoch + 1)}.ckpt", weights_only=False)
        score = next(v for k, v in state["callbacks"].items() if "ModelCheckpoint" in k)["current_score"]
        assert float(score) == pytest.approx(float(row["gap/avg"]), rel=1e-6)


@pytest.mark.parametrize(
    "checkpoint_kwargs,match",
    [
        ({"every_n_epochs": 3}, "multiple of 2"),
        ({}, "set that ModelCheckpoint's every_n_epochs to a multiple of 2"),  # every epoch, by default
        ({"every_n_train_steps": 5}, "every n training steps"),
    ],
)
def test_gap_monitor_that_cannot_match_the_evaluator_is_refused(tmp_path, checkpoint_kwargs, match):
    """Refused before any training; the evaluator never changes the checkpoint callback's
    schedule itself."""
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="gap/avg", mode="min", **checkpoint_kwargs)
    trainer = make_trainer(
        tmp_path,
        [UnlearningEvaluator(batch_size=16, every_n_epochs=2), checkpoint],
        max_epochs=2,
        limit_train_batches=1,
        enable_checkpointing=True,
    )
    model = make_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    schedule = (checkpoint._every_n_epochs, checkpoint._every_n_train_steps)
    with pytest.raises(ValueError, match=match):
        trainer.fit(model, datamodule=make_dm())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not (tmp_path / "ckpt").exists()
    assert (checkpoint._every_n_epochs, checkpoint._every_n_train_steps) == schedule


def test_test_accuracy_has_one_owner(tmp_path):
    """With the evaluator, test/acc is its exact number and the module's test loop does not
    log the key too; without it, the module logs it."""
    logged = []

    def spying(model):
        log = model.log

        def spy(name, *args, **kwargs):
            logged.append(name)
            return log(name, *args, **kwargs)

        model.log = spy
        return model

    trainer = make_trainer(tmp_path, [UnlearningEvaluator(batch_size=16)])
    results = trainer.test(spying(make_model()), datamodule=make_dm())
    assert logged.count("test/acc") == 1 and "test/loss" in logged
    assert results[0]["test/acc"] == pytest.approx(read_json(trainer)["test_acc"], abs=1e-4)
    logged.clear()
    results = make_trainer(tmp_path / "plain", []).test(spying(make_model()), datamodule=make_dm())
    assert logged.count("test/acc") > 0 and "test/acc" in results[0]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"attacks": ["svm"]}, "unknown attacks"),
        ({"remain_subset": 0}, "remain_subset"),
        ({"every_n_epochs": 0}, "every_n_epochs"),
    ],
)
def test_bad_evaluator_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UnlearningEvaluator(**kwargs)


def test_non_finite_values_are_written_as_null(tmp_path):
    from natmu_lightning.io import json_ready

    assert json_ready({"a": float("nan"), "b": {"c": float("inf")}, "d": 1.5}) == {
        "a": None,
        "b": {"c": None},
        "d": 1.5,
    }
