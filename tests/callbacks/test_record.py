"""``unlearning_record.json`` (``natmu_lightning.callbacks.record``) and its summary command.

References are independent of the callback: ``hashlib`` over the files' bytes and over the
datamodule's saved ``forget_indices.npy``, ``collections.Counter`` over the labels, and a
separate ``trainer.validate`` of the original weights for the metrics before unlearning.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger

from natmu_lightning import (
    ClassifierModule,
    ForgetRemainDataModule,
    FTModule,
    SmallCNN,
    UnlearningEvaluator,
    UnlearningRecord,
)
from natmu_lightning.callbacks.record import find_record
from natmu_lightning.data import RandomForget, SyntheticImages
from natmu_lightning.records import RECORD_FILENAME
from natmu_lightning.records import main as summary_main
from tests import tiny_runs

NUM_CLASSES = 4


def make_dm(seed: int = 0) -> ForgetRemainDataModule:
    source = SyntheticImages(
        num_classes=NUM_CLASSES, train_per_class=15, test_per_class=9, channels=1, height=8, width=8, seed=3
    )
    return ForgetRemainDataModule(
        source=source,
        forget=RandomForget(0.2),
        batch_size=16,
        eval_batch_size=64,
        crop_padding=1,
        horizontal_flip=False,
        seed=seed,
    )


def make_trainer(root: Path, callbacks: list, version: str, **kw) -> pl.Trainer:
    """``tiny_runs.make_trainer`` for two epochs, logging to ``root/logs/<version>``, no validation loop."""
    args = dict(max_epochs=2, logger=CSVLogger(str(root), name="logs", version=version), limit_val_batches=0)
    return tiny_runs.make_trainer(root, callbacks, **{**args, **kw})


def trained_weights(path: Path, stream: str, steps: int = 60) -> str:
    """A small classifier trained for a few steps, saved as a plain state dict."""
    torch.manual_seed(1)
    model = ClassifierModule(
        SmallCNN(num_classes=NUM_CLASSES, width=4),
        stream=stream,
        recipe={"optimizer": "adamw", "lr": 1e-2},
    )
    trainer = make_trainer(path.parent, [], path.stem, max_epochs=-1, max_steps=steps)
    trainer.fit(model, datamodule=make_dm())
    torch.save(model.backbone.state_dict(), path)
    return str(path)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("weights")
    return {
        "original": trained_weights(folder / "original.pt", "full"),
        "retrain": trained_weights(folder / "retrain.pt", "remain"),
    }


def ft(original: str) -> FTModule:
    torch.manual_seed(0)
    return FTModule(SmallCNN(num_classes=NUM_CLASSES, width=4), original_ckpt=original, recipe={"lr": 1e-3})


def sha256_of(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_record(trainer: pl.Trainer) -> dict:
    path = Path(trainer.log_dir) / RECORD_FILENAME
    assert path.is_file(), f"{path} was not written"
    return json.loads(path.read_text())


def test_record_holds_the_forget_set_files_config_and_metrics(tmp_path, weights):
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpts", save_top_k=-1, save_last=True)
    evaluator = UnlearningEvaluator(reference_ckpt=weights["retrain"])
    trainer = make_trainer(tmp_path, [evaluator, checkpoint], "ft", enable_checkpointing=True)
    dm = make_dm()
    trainer.fit(ft(weights["original"]), datamodule=dm)
    record = read_record(trainer)

    # What was forgotten: against the datamodule's own index file.
    saved = np.load(Path(trainer.log_dir) / "forget_indices.npy")
    assert record["forgotten"]["count"] == saved.size == dm.forget_indices.numel()
    assert record["forgotten"]["indices_sha256"] == hashlib.sha256(np.sort(saved).astype("<i8").tobytes()).hexdigest()
    labels = Counter(str(dm.data.classes[int(t)]) for t in dm.train_targets[torch.from_numpy(saved)])
    assert record["forgotten"]["per_class"] == dict(labels)
    assert record["forgotten"]["request"] == dm.forget.describe()

    # The files read and written, hashed from their bytes.
    assert record["original_checkpoint"] == {
        "path": str(Path(weights["original"]).resolve()),
        "bytes": Path(weights["original"]).stat().st_size,
        "sha256": sha256_of(weights["original"]),
    }
    on_disk = sorted(str(p.resolve()) for p in (tmp_path / "ckpts").glob("*.ckpt"))
    assert len(on_disk) == 3  # two epochs and last.ckpt
    assert sorted(entry["path"] for entry in record["checkpoints_written"]) == on_disk
    for entry in record["checkpoints_written"]:
        assert entry["sha256"] == sha256_of(entry["path"])

    # Before: the original weights as a separate validate run measures them; after: the fit's
    # final evaluation, as written to unlearning_metrics.json.
    check = UnlearningEvaluator(reference_ckpt=weights["retrain"])
    original = ClassifierModule(SmallCNN(num_classes=NUM_CLASSES, width=4), original_ckpt=weights["original"])
    make_trainer(tmp_path, [check], "validate", limit_val_batches=1.0).validate(
        original, datamodule=make_dm(), verbose=False
    )
    for key in (
        "forget_acc",
        "remain_acc",
        "test_acc",
        "mia_entropy",
        "reference_free_gap",
        "avg_gap",
        "kl_to_reference",
    ):
        assert record["metrics_before"][key] == check.last_metrics[key], key
    assert "mia_svc_entropy" not in record["metrics_before"]  # the slower attacks run on the result only
    metrics_file = json.loads((Path(trainer.log_dir) / "unlearning_metrics.json").read_text())
    assert record["metrics_after"] == metrics_file
    assert (
        record["metrics_after"]["forget_acc"] != record["metrics_before"]["forget_acc"]
        or record["metrics_after"]["mia_entropy"] != record["metrics_before"]["mia_entropy"]
    )

    # The method, its resolved hyperparameters and the environment.
    assert record["method"] == "FTModule"
    assert record["method_class_path"] == "natmu_lightning.methods.ft.FTModule"
    assert record["config"]["model"]["init_args"]["recipe"]["lr"] == 1e-3
    assert record["config"]["model"]["backbone"] == "natmu_lightning.backbones.small_cnn.SmallCNN"
    assert record["config"]["data"]["batch_size"] == 16
    assert "natmu_lightning.callbacks.record.UnlearningRecord" in record["config"]["trainer"]["callbacks"]
    assert (record["world_size"], record["seed"], record["global_step"]) == (1, 0, trainer.global_step)
    assert record["versions"]["pytorch-lightning"] == pl.__version__
    assert record["started_at"] <= record["finished_at"]


def test_a_checkpoint_saved_after_fit_is_added_once(tmp_path, weights):
    trainer = make_trainer(tmp_path, [], "ft", max_epochs=1)
    trainer.fit(ft(weights["original"]), datamodule=make_dm())
    record = find_record(trainer)
    assert read_record(trainer)["checkpoints_written"] == []
    assert read_record(trainer)["metrics_before"] is None  # no evaluator: nothing measured
    target = tmp_path / "unlearned.ckpt"
    trainer.save_checkpoint(target)
    record.add_checkpoint(target)
    record.add_checkpoint(target)
    assert read_record(trainer)["checkpoints_written"] == [
        {"path": str(target.resolve()), "bytes": target.stat().st_size, "sha256": sha256_of(target)}
    ]


def test_a_record_passed_to_the_trainer_is_kept(tmp_path, weights):
    mine = UnlearningRecord(filename="mine.json", metrics_before=False)
    trainer = make_trainer(tmp_path, [UnlearningEvaluator(), mine], "ft", max_epochs=1)
    trainer.fit(ft(weights["original"]), datamodule=make_dm())
    assert [c for c in trainer.callbacks if isinstance(c, UnlearningRecord)] == [mine]
    written = json.loads((Path(trainer.log_dir) / "mine.json").read_text())
    assert written["metrics_before"] is None and written["metrics_after"]["forget_acc"] is not None
    assert not (Path(trainer.log_dir) / RECORD_FILENAME).exists()


def test_a_resumed_fit_keeps_the_first_start_and_the_metrics_before(tmp_path, weights):
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpts", save_last=True)
    first = make_trainer(
        tmp_path, [UnlearningEvaluator(), checkpoint], "first", max_epochs=1, enable_checkpointing=True
    )
    first.fit(ft(weights["original"]), datamodule=make_dm())
    before = read_record(first)

    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpts", save_last=True)
    second = make_trainer(
        tmp_path, [UnlearningEvaluator(), checkpoint], "second", max_epochs=2, enable_checkpointing=True
    )
    second.fit(ft(weights["original"]), datamodule=make_dm(), ckpt_path=str(tmp_path / "ckpts" / "last.ckpt"))
    after = read_record(second)
    assert after["started_at"] == before["started_at"]
    assert len(after["resumed_at"]) == 1 and after["resumed_at"][0] >= before["finished_at"]
    assert after["metrics_before"] == before["metrics_before"]
    assert after["original_checkpoint"] == before["original_checkpoint"]
    assert after["global_step"] == 2 * before["global_step"]


def test_summary_command_prints_the_record(tmp_path, weights, capsys):
    trainer = make_trainer(tmp_path, [UnlearningEvaluator(reference_ckpt=weights["retrain"])], "ft", max_epochs=1)
    trainer.fit(ft(weights["original"]), datamodule=make_dm())
    record = read_record(trainer)
    text = summary_main([trainer.log_dir])
    assert capsys.readouterr().out.strip() == text.strip()
    assert f"{record['forgotten']['count']} training samples" in text
    assert record["forgotten"]["indices_sha256"] in text and record["original_checkpoint"]["sha256"] in text
    line = next(row for row in text.splitlines() if row.startswith("forget acc"))
    assert line.split()[-2:] == [
        f"{record['metrics_before']['forget_acc']:.2f}",
        f"{record['metrics_after']['forget_acc']:.2f}",
    ]
    assert any(row.startswith("avg gap to Retrain") for row in text.splitlines())

    # A record written before retain_acc became remain_acc still shows its remaining accuracy.
    old = json.loads(json.dumps(record))
    for metrics in (old["metrics_before"], old["metrics_after"]):
        metrics.pop("remain_acc")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / RECORD_FILENAME).write_text(json.dumps(old))
    line = next(row for row in summary_main([str(tmp_path / "old")]).splitlines() if row.startswith("remaining acc"))
    assert line.split()[-1] == f"{record['metrics_after']['remain_acc']:.2f}"


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(SystemExit):
        summary_main([str(tmp_path / "missing")])
    (tmp_path / RECORD_FILENAME).write_text("{not json")
    with pytest.raises(SystemExit):
        summary_main([str(tmp_path)])
    for bad in ("../outside.json", "metrics/record.json", "", ".."):
        with pytest.raises(ValueError, match="UnlearningRecord filename must be a plain file name"):
            UnlearningRecord(filename=bad)
        with pytest.raises(ValueError, match="UnlearningEvaluator filename must be a plain file name"):
            UnlearningEvaluator(filename=bad)
    assert UnlearningEvaluator(filename=Path("metrics.json")).filename == Path("metrics.json")
    with pytest.raises(RuntimeError, match="after trainer.fit"):
        UnlearningRecord().add_checkpoint(tmp_path / "x.ckpt")


def test_an_evaluator_and_a_record_writing_one_file_are_refused_before_training(tmp_path):
    """Each would overwrite the other's file, so the run would keep only one of them."""
    callbacks = [UnlearningEvaluator(filename="run.json"), UnlearningRecord(filename="run.json")]
    trainer = tiny_runs.quiet_trainer(tmp_path, max_epochs=1, callbacks=callbacks)
    with pytest.raises(ValueError, match="would both write 'run.json'"):
        trainer.fit(tiny_runs.make_model(), datamodule=make_dm())
    assert trainer.global_step == 0
