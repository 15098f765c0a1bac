"""Repeated deletion requests: ``ForgetRemainDataModule(previous_record=...)`` on the model
the previous request wrote (``natmu_lightning.records``).

Checked against the files themselves: the index files the runs saved, ``hashlib`` over
the record file, and the indices the training loader actually yields.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger

from natmu_lightning import ClassifierModule, ForgetRemainDataModule, FTModule, NatMUModule, SmallCNN
from natmu_lightning.data import IndexForget, RandomForget, SyntheticImages
from natmu_lightning.records import ALREADY_FORGOTTEN_FILENAME, RECORD_FILENAME, indices_sha256, load_previous_request
from tests.tiny_runs import digits_args, digits_run_folder

NUM_CLASSES = 4


def make_dm(previous=None, forget=None, seed: int = 0) -> ForgetRemainDataModule:
    source = SyntheticImages(
        num_classes=NUM_CLASSES, train_per_class=20, test_per_class=6, channels=1, height=8, width=8, seed=5
    )
    return ForgetRemainDataModule(
        source=source,
        forget=forget or RandomForget(0.1),
        batch_size=16,
        eval_batch_size=64,
        crop_padding=1,
        horizontal_flip=False,
        seed=seed,
        natmu={"k": 2},
        previous_record=None if previous is None else str(previous),
    )


def fit(root: Path, name: str, module: pl.LightningModule, dm: ForgetRemainDataModule) -> Path:
    """One epoch with a ModelCheckpoint; returns the run's log dir."""
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        default_root_dir=str(root),
        logger=CSVLogger(str(root), name=name, version=""),
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[ModelCheckpoint(dirpath=root / name / "ckpts", save_last=True)],
    )
    trainer.fit(module, datamodule=dm)
    return Path(trainer.log_dir)


def last_ckpt(log_dir: Path) -> str:
    return str(log_dir / "ckpts" / "last.ckpt")


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("original")
    torch.manual_seed(0)
    model = ClassifierModule(
        SmallCNN(num_classes=NUM_CLASSES, width=4),
        stream="full",
        recipe={"optimizer": "adamw", "lr": 3e-3},
    )
    fit(folder, "original", model, make_dm())
    path = folder / "original.pt"
    torch.save(model.backbone.state_dict(), path)
    return str(path)


def natmu(original_ckpt: str) -> NatMUModule:
    torch.manual_seed(0)
    return NatMUModule(SmallCNN(num_classes=NUM_CLASSES, width=4), original_ckpt=original_ckpt, recipe={"lr": 1e-3})


def streamed_indices(dm: ForgetRemainDataModule) -> set[int]:
    """Every training-set index the training loader yields in one epoch (hybrid partners included)."""
    seen: set[int] = set()
    for batch in dm.train_dataloader():
        seen.update(batch["index"].tolist())
    if dm.hybrid_plan is not None:
        seen.update(dm.hybrid_plan["remain_index"].tolist())
        seen.update(dm.hybrid_plan["forget_index"].tolist())
    return seen


def test_three_requests_accumulate_and_link_their_records(tmp_path, original):
    first_dm = make_dm()
    first = fit(tmp_path, "first", natmu(original), first_dm)
    first_forget = np.load(first / "forget_indices.npy")

    second_dm = make_dm(previous=first, seed=1)
    second = fit(tmp_path, "second", natmu(last_ckpt(first)), second_dm)
    second_forget = np.load(second / "forget_indices.npy")
    assert not set(second_forget) & set(first_forget)
    assert np.array_equal(np.load(second / ALREADY_FORGOTTEN_FILENAME), first_forget)
    # The earlier request's samples are out of the training set: not remaining, not in any batch,
    # not a hybrid partner, not evaluated.
    assert not set(second_dm.remain_indices.tolist()) & set(first_forget)
    assert not streamed_indices(second_dm) & set(first_forget.tolist())
    total = second_dm.train_targets.numel()
    assert second_dm.remain_indices.numel() + second_forget.size + first_forget.size == total
    assert second_dm.evaluation_splits()["remain"][1].numel() == second_dm.remain_indices.numel()

    record = json.loads((second / RECORD_FILENAME).read_text())
    first_record = first / RECORD_FILENAME
    assert record["previous_record"] == {
        "path": str(first_record.resolve()),
        "bytes": first_record.stat().st_size,
        "sha256": hashlib.sha256(first_record.read_bytes()).hexdigest(),
    }
    assert record["already_forgotten"]["count"] == first_forget.size
    assert record["already_forgotten"]["indices_sha256"] == indices_sha256(first_forget)
    assert record["forgotten"]["indices_file"] == str((second / "forget_indices.npy").resolve())

    third_dm = make_dm(previous=second, forget=RandomForget(0.1), seed=2)
    third = fit(
        tmp_path,
        "third",
        FTModule(SmallCNN(num_classes=NUM_CLASSES, width=4), original_ckpt=last_ckpt(second)),
        third_dm,
    )
    union = set(first_forget.tolist()) | set(second_forget.tolist())
    assert set(np.load(third / ALREADY_FORGOTTEN_FILENAME).tolist()) == union
    assert not set(third_dm.forget_indices.tolist()) & union
    assert set(load_previous_request(third).already_forgotten.tolist()) == union | set(third_dm.forget_indices.tolist())


def _nothing_written(log_dir: Path) -> bool:
    return not log_dir.exists() or not any(log_dir.rglob("*.npy"))


def test_a_request_that_cannot_continue_the_chain_is_refused_before_any_write(tmp_path, original):
    first = fit(tmp_path, "first", natmu(original), make_dm())
    already = np.load(first / "forget_indices.npy")

    # Starting again from the original, not from the model the previous request produced.
    with pytest.raises(ValueError, match="is not a checkpoint the previous request's run wrote"):
        fit(tmp_path, "from_original", natmu(original), make_dm(previous=first, seed=1))
    assert _nothing_written(tmp_path / "from_original")

    # An explicit request re-listing an already-forgotten sample.
    new_sample = next(i for i in range(1000) if i not in set(already.tolist()))
    with pytest.raises(ValueError, match="earlier requests already forgot"):
        fit(
            tmp_path,
            "relisted",
            natmu(last_ckpt(first)),
            make_dm(previous=first, forget=IndexForget([int(already[0]), new_sample])),
        )
    assert _nothing_written(tmp_path / "relisted")

    # A record whose index file no longer matches its digest, and a record that does not exist.
    np.save(first / "forget_indices.npy", already[1:])
    with pytest.raises(ValueError, match="does not match the indices_sha256"):
        make_dm(previous=first)
    with pytest.raises(ValueError, match="does not exist"):
        make_dm(previous=tmp_path / "missing")


def readme_command(heading: str) -> list[str]:
    """The first ``bash`` block after ``heading`` in docs/repeated-requests.md, as one command's arguments."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "repeated-requests.md").read_text()
    block = text.split(heading, 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return block.replace("\\\n", " ").split()


@pytest.mark.slow  # three digits fits through the CLI (about a minute)
def test_the_readme_second_request_command_runs(tmp_path, monkeypatch):
    from natmu_lightning.cli import main

    monkeypatch.chdir(tmp_path)
    repo = Path(__file__).resolve().parents[1]
    quiet = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    main(["fit", *digits_args("original"), "--trainer.max_epochs", "10", *quiet])
    main(["fit", *digits_args("natmu"), "--evaluator.reference_ckpt", "null", *quiet])
    command = readme_command("## Repeated deletion requests")
    assert command[:2] == ["natmu-lightning", "fit"]
    # The guide runs from the repository's root; this test runs in its own folder.
    command = [str(repo / arg) if arg.startswith("configs/") else arg for arg in command]
    cli = main([*command[1:], *quiet])
    second = Path(cli.trainer.log_dir).resolve()
    assert second.is_relative_to(tmp_path / digits_run_folder("natmu").with_name("request2"))
    record = json.loads((second / RECORD_FILENAME).read_text())
    first = tmp_path / digits_run_folder("natmu") / "version_0" / RECORD_FILENAME
    assert record["previous_record"]["path"] == str(first.resolve())
    assert not set(np.load(second / "forget_indices.npy").tolist()) & set(
        np.load(first.parent / "forget_indices.npy").tolist()
    )
