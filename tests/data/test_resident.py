"""Device-resident training images: the same batches as the loader path (checked on the CPU,
where the resident copy is the tensor itself but the batches take the index-only path)."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from natmu_lightning import ForgetRemainDataModule, NatMUModule, SmallCNN
from natmu_lightning.data import Digits
from natmu_lightning.data.resident import use_device_resident
from natmu_lightning.images import DiskImages
from tests.tiny_runs import pretrained_small_cnn, quiet_trainer, setup_fit


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> str:
    return pretrained_small_cnn(Digits(), 10, tmp_path_factory.mktemp("resident") / "original.pt")


def attached(stream: str, resident: bool, original: str, root: Path, **kw) -> ForgetRemainDataModule:
    module = NatMUModule(SmallCNN(num_classes=10, width=4), original_ckpt=original)
    dm = ForgetRemainDataModule(stream=stream, batch_size=48, device_resident=resident, num_workers=2, **kw)
    trainer = quiet_trainer(root, max_epochs=2)
    trainer.strategy.connect(module)
    dm.trainer = trainer
    setup_fit(dm)
    return dm


def transferred_batches(dm: ForgetRemainDataModule, epoch: int) -> list[dict]:
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch)  # type: ignore[union-attr]  # both samplers of the datamodule have it
    return [dm.on_after_batch_transfer(dm.on_before_batch_transfer(raw, 0), 0) for raw in loader]


@pytest.mark.parametrize("stream", ["hybrid", "both", "paired"])
def test_resident_batches_equal_the_loader_batches(stream: str, original: str, tmp_path: Path) -> None:
    loader_dm = attached(stream, False, original, tmp_path / "loader")
    resident_dm = attached(stream, True, original, tmp_path / "resident")
    assert resident_dm.resident is not None and loader_dm.resident is None
    first = next(iter(resident_dm.train_dataloader()))
    assert "image" not in first and "partner_index" in first  # indices only come out of the loader
    assert resident_dm.train_dataloader().num_workers == 0 and loader_dm.train_dataloader().num_workers == 2
    for epoch in (0, 1):
        ours, theirs = transferred_batches(resident_dm, epoch), transferred_batches(loader_dm, epoch)
        assert len(ours) == len(theirs) > 1
        for a, b in zip(ours, theirs):
            assert a.keys() == b.keys()
            for key in a:
                assert torch.equal(a[key], b[key]) if isinstance(a[key], torch.Tensor) else a[key] == b[key], key
    if stream == "hybrid":
        assert torch.equal(resident_dm.hybrid_plan["remain_index"], loader_dm.hybrid_plan["remain_index"])


def test_a_resident_fit_trains_the_same_weights(original: str, tmp_path: Path) -> None:
    weights = []
    for resident in (False, True):
        pl.seed_everything(0, verbose=False)
        module = NatMUModule(SmallCNN(num_classes=10, width=4), original_ckpt=original)
        dm = ForgetRemainDataModule(batch_size=48, device_resident=resident)
        quiet_trainer(tmp_path / str(resident), max_epochs=2).fit(module, datamodule=dm)
        weights.append(module.backbone.state_dict())
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key


def test_auto_is_off_on_the_cpu_and_on_cuda_when_it_fits(monkeypatch) -> None:
    images = torch.zeros(100, 3, 32, 32, dtype=torch.uint8)  # 307,200 bytes
    assert not use_device_resident(None, images, on_cuda=False)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (4 * images.nbytes, 8 * images.nbytes))
    assert use_device_resident(None, images, on_cuda=True, fraction=0.25)
    assert not use_device_resident(None, images, on_cuda=True, fraction=0.2)
    assert not use_device_resident(False, images, on_cuda=True)


def test_bad_resident_requests_are_refused(monkeypatch) -> None:
    images = torch.zeros(100, 3, 32, 32, dtype=torch.uint8)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (images.nbytes, 2 * images.nbytes))
    with pytest.raises(ValueError, match="training images take 0 MiB, more than 0.25 of the GPU's free memory"):
        use_device_resident(True, images, on_cuda=True)
    on_disk = DiskImages(lambda i: torch.zeros(1, 2, 2, dtype=torch.uint8), (1, 2, 2), 3)
    with pytest.raises(ValueError, match="keeps them on disk"):
        use_device_resident(True, on_disk, on_cuda=False)
    assert not use_device_resident(None, on_disk, on_cuda=True)
    with pytest.raises(ValueError, match="resident_memory_fraction"):
        ForgetRemainDataModule(resident_memory_fraction=0.0)
