"""Multi-process evaluation is exact (docs/design.md section 4).

Two CPU processes (gloo, spawn) must give the very same numbers as one process on the
same weights: the same logits bit for bit, so the same accuracies and the attack on
the identical feature set. Spawned processes do not share the parent's callback
objects, so every result is read back from files.

Each spawn costs seconds (the children import torch and Lightning), so the file runs
one two-process ``validate`` per test and packs several batch sizes into it.
"""

from __future__ import annotations

import json
import multiprocessing
from datetime import timedelta
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.strategies import DDPStrategy

from natmu_lightning import ClassifierModule, ForgetRemainDataModule, SmallCNN, UnlearningEvaluator
from natmu_lightning.callbacks.distributed import sharded_logits
from natmu_lightning.data import IndexForget, SyntheticImages
from natmu_lightning.data.transforms import to_unit_float
from tests.tiny_runs import DIGITS_ORIGINAL, DIGITS_RETRAIN, digits_args, pretrained_small_cnn

NUM_CLASSES = 4
# 7 forget samples (odd: no even split over 2 ranks), 53 remaining (odd), 36 test.
FORGET = [0, 3, 4, 9, 17, 22, 31]
# 4: every split has uneven per-rank shares (forget: 4 + 3 samples, test: 5 + 4 batches);
# 8: the forget set is one batch, so rank 1 holds no forget batch at all;
# 64: every split is one batch, so rank 1 computes nothing and only joins the gathers.
BATCH_SIZES = (4, 8, 64)
METRIC_FILES = {4: "bs4.json", 8: "unlearning_metrics.json", 64: "bs64.json"}


@pytest.fixture(autouse=True)
def _fresh_port_and_no_orphans(monkeypatch):
    """Each spawn picks its own free port, and a failed or timed-out spawn leaves no
    workers behind (they would block the interpreter's exit).

    Lightning's spawn launcher exports MASTER_PORT and later runs in the same process
    reuse it, though another process may have taken the port meanwhile.
    """
    monkeypatch.delenv("MASTER_PORT", raising=False)
    yield
    for child in multiprocessing.active_children():
        child.terminate()
        child.join(10)
        if child.is_alive():
            child.kill()
            child.join()


def source() -> SyntheticImages:
    return SyntheticImages(
        num_classes=NUM_CLASSES, train_per_class=15, test_per_class=9, channels=1, height=8, width=8, seed=3
    )


def make_dm() -> ForgetRemainDataModule:
    dm = ForgetRemainDataModule(source=source(), forget=IndexForget(FORGET), stream="remain", eval_batch_size=16)
    # Resolve the forget set here, in the parent, so the children receive it pickled.
    dm.setup("validate")
    return dm


class LogitsDump(pl.Callback):
    """Saves, on every rank, ``sharded_logits`` of every split at every batch size."""

    def __init__(self, folder: str, batch_sizes=BATCH_SIZES) -> None:
        self.folder, self.batch_sizes = folder, tuple(batch_sizes)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        splits = trainer.datamodule.evaluation_splits()
        logits = {
            f"{name}/{bs}": sharded_logits(pl_module, images, bs, trainer)
            for bs in self.batch_sizes
            for name, (images, _) in splits.items()
        }
        # an empty split: every rank must agree on skipping the gather
        logits["empty/4"] = sharded_logits(pl_module, splits["forget"][0][:0], 4, trainer)
        payload = {"world_size": trainer.world_size, "rank": trainer.global_rank, "logits": logits}
        torch.save(payload, Path(self.folder) / f"logits_ws{trainer.world_size}_rank{trainer.global_rank}.pt")


def run_validate(root: Path, devices: int, weights: str, reference: str) -> pl.Trainer:
    root.mkdir(parents=True, exist_ok=True)
    callbacks = [
        UnlearningEvaluator(batch_size=4, filename=METRIC_FILES[4]),
        UnlearningEvaluator(batch_size=8, filename=METRIC_FILES[8], reference_ckpt=reference),
        UnlearningEvaluator(batch_size=64, filename=METRIC_FILES[64]),
        LogitsDump(str(root)),
    ]
    # the "ddp_spawn" strategy, with a short collective timeout so that a mismatch of
    # collectives between the ranks fails the test instead of hanging it
    strategy = (
        DDPStrategy(start_method="spawn", process_group_backend="gloo", timeout=timedelta(seconds=120))
        if devices > 1
        else "auto"
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy=strategy,
        default_root_dir=str(root),
        logger=CSVLogger(str(root), name="logs", version=0),
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    model = ClassifierModule(SmallCNN(num_classes=NUM_CLASSES, width=4), original_ckpt=weights)
    trainer.validate(model, datamodule=make_dm())
    return trainer


def read_metrics(root: Path, name: str) -> dict:
    path = root / "logs" / "version_0" / name
    assert path.is_file(), f"{path} was not written"
    return json.loads(path.read_text())


def plain_logits(model: torch.nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return torch.cat(
            [model(to_unit_float(images[s : s + batch_size])).float() for s in range(0, images.shape[0], batch_size)]
        )


@pytest.mark.timeout(300)
def test_two_processes_give_identical_metrics_and_logits(tmp_path):
    weights = pretrained_small_cnn(source(), NUM_CLASSES, tmp_path / "model.pt", seed=0, steps=30, batch_size=32)
    reference = pretrained_small_cnn(source(), NUM_CLASSES, tmp_path / "retrain.pt", seed=1, steps=30, batch_size=32)

    run_validate(tmp_path / "one", 1, weights, reference)
    run_validate(tmp_path / "two", 2, weights, reference)

    splits = make_dm().evaluation_splits()
    assert {k: v[0].shape[0] for k, v in splits.items()} == {"forget": 7, "remain": 53, "test": 36}

    # the metrics files: identical values, world_size 1 vs 2
    for bs, name in METRIC_FILES.items():
        one, two = read_metrics(tmp_path / "one", name), read_metrics(tmp_path / "two", name)
        assert (one.pop("world_size"), two.pop("world_size")) == (1, 2), name
        # the per-process batch is the same, so the effective (global) batch doubles
        assert 2 * one.pop("effective_batch_size") == two.pop("effective_batch_size"), name
        assert one == two, f"batch_size={bs}: {one} != {two}"
        assert one["stage"] == "validate"
        assert 0.0 < one["mia_entropy"] < 100.0  # a non-degenerate attack on 7 forget samples
        assert ("reference" in one) == (bs == 8)
    with_reference = read_metrics(tmp_path / "two", METRIC_FILES[8])
    assert with_reference["avg_gap"] > 0.0 and with_reference["reference"] != {
        k: with_reference[k] for k in with_reference["reference"]
    }
    # every batch size gives the same numbers (same samples, no duplicates, none missed)
    keys = ("forget_acc", "remain_acc", "test_acc")
    values = [tuple(read_metrics(tmp_path / "two", name)[k] for k in keys) for name in METRIC_FILES.values()]
    assert len(set(values)) == 1

    # the gathered logits: bitwise equal to one process, on both ranks, in the input's order
    single = torch.load(tmp_path / "one" / "logits_ws1_rank0.pt")
    ranks = [torch.load(tmp_path / "two" / f"logits_ws2_rank{r}.pt") for r in (0, 1)]
    assert single["world_size"] == 1 and [p["world_size"] for p in ranks] == [2, 2]
    net = SmallCNN(num_classes=NUM_CLASSES, width=4)
    net.load_state_dict(torch.load(weights))
    assert single["logits"].pop("empty/4").shape == (0, NUM_CLASSES)
    assert all(p["logits"].pop("empty/4").shape == (0, NUM_CLASSES) for p in ranks)
    for key, expected in single["logits"].items():
        name, bs = key.split("/")
        assert expected.shape == (splits[name][0].shape[0], NUM_CLASSES)
        assert torch.equal(expected, plain_logits(net, splits[name][0], int(bs))), key
        for payload in ranks:
            got = payload["logits"][key]
            assert got.dtype == expected.dtype and got.shape == expected.shape, key
            assert torch.equal(got, expected), f"{key} differs on rank {payload['rank']}"


@pytest.mark.slow  # ~25 s; test_two_processes_give_identical_metrics_and_logits covers exactness by default
@pytest.mark.timeout(300)
def test_cli_validate_same_on_one_and_two_processes(tmp_path, monkeypatch):
    """``natmu-lightning validate`` on the digits NatMU run, 1 vs 2 processes.

    The configs' relative paths (runs/digits/...) resolve inside tmp_path: one epoch of
    the original and Retrain runs writes the checkpoints the NatMU run points at.
    """
    from natmu_lightning.cli import main

    monkeypatch.chdir(tmp_path)
    quiet = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    for name, written_file in (("original", DIGITS_ORIGINAL), ("retrain", DIGITS_RETRAIN)):
        main(["fit", *digits_args(name), "--trainer.max_epochs", "1", *quiet])
        assert (tmp_path / written_file).is_file()

    validate = ["validate", *digits_args("natmu"), *quiet]
    main([*validate, "--trainer.devices", "1", "--trainer.logger.init_args.save_dir", "runs/one"])
    main(
        [
            *validate,
            "--trainer.devices",
            "2",
            "--trainer.strategy",
            "ddp_spawn",
            "--trainer.accelerator",
            "cpu",
            "--trainer.logger.init_args.save_dir",
            "runs/two",
        ]
    )

    def written(folder: str) -> dict:
        found = sorted((tmp_path / "runs" / folder).rglob("unlearning_metrics.json"))
        assert len(found) == 1, f"expected one unlearning_metrics.json under runs/{folder}, found {found}"
        return json.loads(found[0].read_text())

    one, two = written("one"), written("two")
    assert (one.pop("world_size"), two.pop("world_size")) == (1, 2)
    assert 2 * one.pop("effective_batch_size") == two.pop("effective_batch_size")
    assert one == two
    assert one["stage"] == "validate"
    assert {"forget_acc", "remain_acc", "test_acc", "mia_entropy", "avg_gap", "reference"} <= set(one)
    assert one["reference_ckpt"] == str(DIGITS_RETRAIN)
