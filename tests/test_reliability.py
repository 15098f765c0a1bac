"""Nothing of the user's is written to; bad input stops before any training."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from natmu_lightning import ForgetRemainDataModule, NatMUModule, SmallCNN, UnlearningEvaluator
from natmu_lightning.cli import main
from natmu_lightning.data import IndexForget


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_original_reference_and_index_file_are_never_written(tmp_path):
    torch.manual_seed(0)
    original, reference = tmp_path / "original.pt", tmp_path / "retrain.pt"
    torch.save(SmallCNN().state_dict(), original)
    torch.save(SmallCNN().state_dict(), reference)
    indices = tmp_path / "forget.npy"
    np.save(indices, np.arange(0, 1200, 10))
    before = {p: (digest(p), p.stat().st_mtime_ns) for p in (original, reference, indices)}

    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=2, default_root_dir=tmp_path,
                         enable_progress_bar=False, callbacks=[UnlearningEvaluator(reference_ckpt=str(reference))])
    dm = ForgetRemainDataModule(forget=IndexForget(str(indices)), batch_size=32)
    trainer.fit(NatMUModule(SmallCNN(), original_ckpt=str(original)), datamodule=dm)
    after = {p: (digest(p), p.stat().st_mtime_ns) for p in before}
    assert after == before


@pytest.mark.parametrize("override,match", [
    (["--data.forget.init_args.ratio", "1.5"], "ratio"),
    (["--data.delta", "2.0"], "delta"),
    (["--data.k", "7"], "k must"),
    (["--model.init_args.original_ckpt", "missing.ckpt"], "original_ckpt"),
    (["--evaluator.reference_ckpt", "missing.ckpt"], "reference_ckpt"),
])
def test_cli_bad_input_fails_before_training(tmp_path, monkeypatch, capsys, override, match):
    monkeypatch.chdir(tmp_path)
    torch.save(SmallCNN().state_dict(), tmp_path / "original.pt")
    args = ["fit", "--config", str(Path(__file__).parents[1] / "configs/digits/natmu.yaml"),
            "--model.init_args.original_ckpt", "original.pt", "--evaluator.reference_ckpt", "original.pt",
            "--trainer.enable_progress_bar", "false", *override]
    with pytest.raises((ValueError, SystemExit)) as error:
        main(args)
    # Lightning's parser reports errors raised while instantiating classes on stderr and exits 2.
    message = str(error.value) if error.type is ValueError else capsys.readouterr().err
    assert error.type is ValueError or error.value.code == 2
    assert match in message, message[-500:]
    assert not list(tmp_path.rglob("*.ckpt")), "no checkpoint may be written"
