"""Datasets kept on disk (``DiskImages``) against the same images in memory.

The digits are written as lossless PNG files (and as a user's ``Dataset``, and as a litdata
set), so the on-disk and in-memory paths see the very same pixels: every number must then
be the same, bit for bit, whatever the number of decoding workers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.strategies import DDPStrategy
from torch.utils.data import Dataset

from natmu_lightning import ForgetRemainDataModule, NatMUModule, SmallCNN, UnlearningEvaluator
from natmu_lightning.data import (
    ClassForget,
    DataSource,
    Digits,
    HardestForget,
    ImageFolder,
    ImageSplit,
    MapDataset,
    RandomForget,
    SourceData,
)
from natmu_lightning.data.requests import resolve_excluding
from natmu_lightning.images import DiskImages, concat, image_batches, take
from natmu_lightning.predict import predict_logits
from tests.tiny_runs import pretrained_small_cnn, quiet_trainer

REPO = Path(__file__).resolve().parents[2]


def write_folder(images: torch.Tensor, targets: torch.Tensor, root: Path) -> None:
    for i, (image, label) in enumerate(zip(images, targets.tolist())):
        folder = root / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0].numpy(), mode="L").save(folder / f"{i:05d}.png")


@pytest.fixture(scope="module")
def digits_folders(tmp_path_factory) -> Path:
    """scikit-learn's digits as ``train/classN/*.png`` and ``test/classN/*.png`` (8x8 greyscale)."""
    root = tmp_path_factory.mktemp("digits_png")
    data = Digits().load()
    write_folder(data.train.images, data.train.targets, root / "train")
    write_folder(data.test.images, data.test.targets, root / "test")
    return root


def folder_source(root: Path, on_disk: bool, **kw) -> ImageFolder:
    return ImageFolder(str(root / "train"), str(root / "test"), mode="L", on_disk=on_disk, **kw)


def counting_images(length: int = 7, workers: int = 2) -> DiskImages:
    return DiskImages(_constant_image, (1, 2, 3), length, num_workers=workers)


def _constant_image(i: int) -> torch.Tensor:  # module level: picklable for spawned workers too
    return torch.full((1, 2, 3), i, dtype=torch.uint8)


def test_views_read_nothing_and_batches_match_the_tensor():
    images = counting_images()
    memory = images[:]
    assert memory.shape == images.shape == (7, 1, 2, 3) and memory[:, 0, 0, 0].tolist() == list(range(7))
    view = take(images, torch.tensor([5, 1, 3]))
    assert isinstance(view, DiskImages) and view.positions.tolist() == [5, 1, 3]
    assert torch.equal(take(view, torch.tensor([True, False, True]))[:], memory[[5, 3]])
    assert torch.equal(images[torch.tensor(2)], memory[2])
    joined = concat([view, take(images, slice(0, 2))])
    assert torch.equal(joined[:], torch.cat([memory[[5, 1, 3]], memory[:2]]))
    for batch_size, starts in ((3, None), (2, [4, 0]), (10, None)):
        got = list(image_batches(images, batch_size, starts))
        expected = list(image_batches(memory, batch_size, starts))
        assert len(got) == len(expected) and all(torch.equal(a, b) for a, b in zip(got, expected))
    with pytest.raises(ValueError, match="only on-disk views of one dataset"):
        concat([view, DiskImages(lambda i: torch.zeros((1, 2, 3), dtype=torch.uint8), (1, 2, 3), 7)])


def test_a_sample_of_another_shape_is_named():
    images = DiskImages(lambda i: torch.zeros((1, 2, 2 + i), dtype=torch.uint8), (1, 2, 2), 3, num_workers=0)
    assert images[0].shape == (1, 2, 2)
    with pytest.raises(ValueError, match=r"sample 2 was read as torch.uint8 \(1, 2, 4\); every sample .* \(1, 2, 2\)"):
        images[[0, 2]]


def test_image_folder_on_disk_reads_the_pixels_the_in_memory_folder_holds(digits_folders):
    memory, disk = folder_source(digits_folders, False).load(), folder_source(digits_folders, True).load()
    assert isinstance(disk.train.images, DiskImages) and isinstance(memory.train.images, torch.Tensor)
    assert "on disk" in repr(disk.train)
    for split in ("train", "test"):
        a, b = getattr(memory, split), getattr(disk, split)
        assert torch.equal(a.targets, b.targets) and b.images.shape == a.images.shape
        assert torch.equal(torch.cat(list(image_batches(b.images, 200))), a.images)
    # the folder holds exactly the digits (sorted per class folder)
    digits = Digits().load().train
    assert sorted(map(bytes, memory.train.images.flatten(1).numpy())) == sorted(
        map(bytes, digits.images.flatten(1).numpy())
    )


def test_bad_files_are_refused_at_load_naming_the_file(tmp_path, digits_folders):
    root = tmp_path / "bad"
    data = Digits().load()
    write_folder(data.test.images[:20], data.test.targets[:20], root / "train")
    write_folder(data.test.images[:20], data.test.targets[:20], root / "test")
    some_class = sorted((root / "train").iterdir())[0]
    bigger = some_class / "bigger.png"
    Image.new("L", (12, 10)).save(bigger)
    with pytest.raises(ValueError, match=rf"image {bigger} has size 12x10 \(WxH\) but .* 8x8; pass image_size"):
        folder_source(root, True).load()
    resized = folder_source(root, True, image_size=16).load()  # the documented resize
    assert resized.train.images.shape[1:] == (1, 16, 16) and resized.train.images[:].shape[0] == 21
    broken = some_class / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(ValueError, match=rf"cannot read image file {broken}"):
        folder_source(root, True, image_size=16).load()
    with pytest.raises(ValueError, match="num_workers must be an integer >= 0"):
        folder_source(root, True, num_workers=-1)


class UserDigits(Dataset):
    """A user's own dataset: PIL images, or ``{"image", "label"}`` records; optionally ``targets``."""

    def __init__(self, train: bool, records: bool = False, with_targets: bool = False) -> None:
        split = Digits().load().train if train else Digits().load().test
        self.images, self.labels, self.records = split.images, split.targets.tolist(), records
        if with_targets:
            self.targets = self.labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        image = Image.fromarray(self.images[i, 0].numpy(), mode="L")
        return {"image": image, "label": self.labels[i]} if self.records else (image, self.labels[i])


@pytest.mark.parametrize("records, with_targets", [(False, False), (True, True)])
def test_a_users_dataset_on_disk_matches_it_in_memory(records, with_targets):
    kw = dict(classes=[str(c) for c in range(10)])
    train, test = UserDigits(True, records, with_targets), UserDigits(False, records, with_targets)
    memory = MapDataset(train, test, **kw).load()
    disk = MapDataset(train, test, on_disk=True, **kw).load()
    assert isinstance(disk.train.images, DiskImages)
    assert torch.equal(memory.train.targets, disk.train.targets)
    assert torch.equal(torch.cat(list(image_batches(disk.train.images, 500))), memory.train.images)
    assert torch.equal(memory.train.images, Digits().load().train.images)


class OneWiderImage(Dataset):
    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int):
        return torch.zeros((1, 8, 9 if i == 5 else 8), dtype=torch.uint8), i % 2


def test_a_users_sample_of_another_size_is_named():
    with pytest.raises(ValueError, match=r"train\[5\] has image shape \(1, 8, 9\) but train\[0\] has \(1, 8, 8\)"):
        MapDataset(OneWiderImage(), UserDigits(False), on_disk=True).load()


class FirstDigits(DataSource):
    """The first 300 training and 100 test digits, in memory: what WRITE_LITDATA writes."""

    def load(self) -> SourceData:
        data = Digits().load()
        return SourceData(
            ImageSplit(data.train.images[:300], data.train.targets[:300]),
            ImageSplit(data.test.images[:100], data.test.targets[:100]),
            data.classes,
        )


#: Writes the first digits as two litdata sets (run in its own interpreter: ``litdata.optimize``
#: starts worker processes by spawning, which must not re-run the test session's imports).
WRITE_LITDATA = """
import functools
import sys
import litdata
from natmu_lightning.data import Digits

LITDATA_SIZES = {"train": 300, "test": 100}

@functools.cache
def digits():
    return Digits().load()

def record(item):
    split, i = item
    data = getattr(digits(), split)
    return {"image": data.images[i, 0].numpy(), "label": int(data.targets[i])}

if __name__ == "__main__":
    for split in ("train", "test"):
        litdata.optimize(fn=record, inputs=[(split, i) for i in range(LITDATA_SIZES[split])],
                         output_dir=f"{sys.argv[1]}/{split}", chunk_bytes="64KB", num_workers=1)
"""


@pytest.mark.slow  # ~22 s, nearly all of it litdata.optimize's worker start-up
@pytest.mark.timeout(300)
def test_litdata_streaming_set_is_read_per_sample(tmp_path):
    pytest.importorskip("litdata")
    from natmu_lightning.data import LitData

    script = tmp_path / "write_litdata.py"
    script.write_text(WRITE_LITDATA)
    subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        check=True,
        capture_output=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    memory = FirstDigits()
    data = memory.load()
    source = LitData(str(tmp_path / "train"), str(tmp_path / "test"))
    disk = source.load()
    assert isinstance(disk.train.images, DiskImages) and disk.classes == [str(c) for c in range(10)]
    assert torch.equal(disk.train.targets, data.train.targets) and torch.equal(disk.test.targets, data.test.targets)
    assert torch.equal(torch.cat(list(image_batches(disk.train.images, 64))), data.train.images)
    # through the datamodule's loader, decoded in 2 workers: the batches of the in-memory set
    batches = {}
    for name, src in (("disk", source), ("memory", memory)):
        dm = ForgetRemainDataModule(src, RandomForget(0.1), stream="remain", num_workers=2 if name == "disk" else 0)
        dm.setup("fit")
        batches[name] = list(dm.train_dataloader())
    assert len(batches["disk"]) == len(batches["memory"])
    for a, b in zip(batches["disk"], batches["memory"]):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["index"], b["index"])


class StopAfterFirstEpoch(pl.Callback):
    """Ends the fit after its first epoch, as a killed job would (the schedule still says 2)."""

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trainer.should_stop = True


def natmu_fit(
    root: Path,
    source,
    num_workers: int,
    original: str,
    reference: str,
    ckpt_path: str | None = None,
    interrupt: bool = False,
    devices: int = 1,
) -> tuple[dict, dict]:
    """A 2-epoch NatMU fit on ``source``: its unlearning metrics and final weights."""
    torch.manual_seed(0)
    module = NatMUModule(
        SmallCNN(num_classes=10, width=4),
        original_ckpt=original,
        recipe={"lr": 0.03, "optimizer": "sgd", "lr_schedule": "constant", "warmup_epochs": 0.0},
    )
    dm = ForgetRemainDataModule(source, RandomForget(0.1), batch_size=64, num_workers=num_workers, seed=1)
    evaluator = UnlearningEvaluator(reference_ckpt=reference, attacks=("svc", "loss_cv"))
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=str(root / "ckpt"), save_last=True)
    callbacks = [evaluator, checkpoint, *([StopAfterFirstEpoch()] if interrupt else [])]
    # two processes: Lightning's "ddp_spawn" on gloo, with a timeout so a collective mismatch fails
    strategy = DDPStrategy(start_method="spawn", process_group_backend="gloo", timeout=timedelta(seconds=120))
    trainer = quiet_trainer(
        root,
        max_epochs=2,
        callbacks=callbacks,
        devices=devices,
        strategy=strategy if devices > 1 else "auto",
        logger=pl.loggers.CSVLogger(str(root), name="logs", version=0),
        enable_checkpointing=True,
    )
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    metrics = json.loads((root / "logs" / "version_0" / "unlearning_metrics.json").read_text())
    return metrics, {k: v.clone() for k, v in module.backbone.state_dict().items()}


def comparable(metrics: dict) -> dict:
    """The numbers of a metrics file (not where it was written or how long it took)."""
    return {k: v for k, v in metrics.items() if not any(word in k for word in ("path", "ckpt", "time", "seconds"))}


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("weights")
    digits = Digits()
    return (
        pretrained_small_cnn(digits, 10, folder / "original.pt", seed=0, steps=150),
        pretrained_small_cnn(digits, 10, folder / "retrain.pt", seed=1, steps=150),
    )


@pytest.mark.timeout(300)
def test_natmu_on_disk_with_workers_is_bit_identical_to_in_memory(tmp_path, digits_folders, weights):
    """Forget request, hybrid plan and partners (fetched by index), mixing, evaluation and
    attacks: the same numbers and weights from PNG files decoded in 2 workers."""
    memory, memory_weights = natmu_fit(tmp_path / "memory", folder_source(digits_folders, False), 0, *weights)
    disk, disk_weights = natmu_fit(tmp_path / "disk", folder_source(digits_folders, True), 2, *weights)
    assert comparable(disk) == comparable(memory)
    assert 0.0 < memory["forget_acc"] < 100.0 and "reference" in memory
    assert all(torch.equal(disk_weights[k], memory_weights[k]) for k in memory_weights)
    plans = [np.load(next((tmp_path / name).rglob("hybrid_plan.npz"))) for name in ("memory", "disk")]
    assert all(np.array_equal(plans[0][k], plans[1][k]) for k in plans[0].files)


@pytest.mark.slow  # ~11 s: three fits (the in-memory resume is covered by tests/test_resume.py too)
@pytest.mark.timeout(300)
def test_an_on_disk_fit_resumes_exactly(tmp_path, digits_folders, weights):
    source = folder_source(digits_folders, True)
    straight, straight_weights = natmu_fit(tmp_path / "straight", source, 2, *weights)
    first_epoch, _ = natmu_fit(tmp_path / "resumed", source, 2, *weights, interrupt=True)
    assert 2 * first_epoch["global_step"] == straight["global_step"]  # stopped after one of two epochs
    resumed, resumed_weights = natmu_fit(
        tmp_path / "resumed", source, 2, *weights, ckpt_path=str(tmp_path / "resumed" / "ckpt" / "last.ckpt")
    )
    assert comparable(resumed) == comparable(straight)
    assert all(torch.equal(resumed_weights[k], straight_weights[k]) for k in straight_weights)


@pytest.mark.slow  # ~1 min: two 2-process fits
@pytest.mark.timeout(600)
def test_two_process_ddp_on_disk_is_bit_identical_to_in_memory(tmp_path, digits_folders, weights):
    """Under DDP each rank decodes its own share (training batches, evaluation shards): the
    numbers are those of the in-memory set under the same 2-process run."""
    memory, memory_weights = natmu_fit(
        tmp_path / "memory", folder_source(digits_folders, False), 0, *weights, devices=2
    )
    disk, disk_weights = natmu_fit(tmp_path / "disk", folder_source(digits_folders, True), 2, *weights, devices=2)
    assert memory["world_size"] == disk["world_size"] == 2
    assert comparable(disk) == comparable(memory)
    assert all(torch.equal(disk_weights[k], memory_weights[k]) for k in memory_weights)


def test_the_cli_trains_from_an_image_folder_kept_on_disk(tmp_path, digits_folders, monkeypatch):
    """README's *Data larger than memory*: the source chosen on the command line (or in YAML)."""
    from natmu_lightning.cli import main
    from tests.tiny_runs import digits_args

    monkeypatch.chdir(tmp_path)
    source = [
        "--data.source",
        "natmu_lightning.data.ImageFolder",
        "--data.source.mode",
        "L",
        "--data.source.train_root",
        str(digits_folders / "train"),
        "--data.source.test_root",
        str(digits_folders / "test"),
    ]
    quiet = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    for on_disk in ("true", "false"):  # the same fit from the files kept on disk, then decoded into memory
        main(
            [
                "fit",
                *digits_args("original"),
                *source,
                "--data.source.on_disk",
                on_disk,
                "--data.num_workers",
                "2",
                "--trainer.max_epochs",
                "1",
                "--trainer.logger.init_args.save_dir",
                f"on_disk_{on_disk}",
                *quiet,
            ]
        )
    config = next((tmp_path / "on_disk_true").rglob("config.yaml")).read_text()
    assert "on_disk: true" in config and "natmu_lightning.data.ImageFolder" in config
    disk, memory = (
        json.loads(next((tmp_path / f"on_disk_{flag}").rglob("unlearning_metrics.json")).read_text())
        for flag in ("true", "false")
    )
    assert comparable(disk) == comparable(memory)  # every number, to the bit
    assert disk["test_acc"] > 30.0  # trained from the decoded files (45.7 measured; chance is 10%)


@pytest.mark.parametrize(
    "request_",
    [RandomForget(0.1), ClassForget([3]), HardestForget(0.05)],
    ids=["random", "class", "hardest"],
)
def test_forget_requests_and_splits_on_disk_match_in_memory(digits_folders, weights, request_):
    """Every request resolves to the same samples (the hardest ones ranked by the original
    model's losses over the on-disk set, read in workers), also when earlier requests
    already forgot some (a further deletion request), and every evaluation split holds the
    same pixels."""
    net = SmallCNN(num_classes=10, width=4)
    net.load_state_dict(torch.load(weights[0]))

    def losses(images, targets):
        return torch.nn.functional.cross_entropy(predict_logits(net, images), targets, reduction="none")

    sources = {name: folder_source(digits_folders, name == "disk").load() for name in ("memory", "disk")}
    already = torch.arange(0, 1257, 9)  # forgotten by an earlier request
    for excluded in (torch.zeros(0, dtype=torch.long), already):
        if isinstance(request_, ClassForget) and excluded.numel():
            continue
        chosen = {name: resolve_excluding(request_, data, 0, losses, excluded) for name, data in sources.items()}
        assert torch.equal(chosen["memory"], chosen["disk"]) and chosen["disk"].numel() > 0
    splits = {}
    for name, data in sources.items():
        dm = ForgetRemainDataModule(folder_source(digits_folders, name == "disk"), request_)
        dm.data = data
        dm.forget_indices = chosen[name]  # as resolved above (HardestForget needs a fitted module)
        keep = torch.ones(1257, dtype=torch.bool)
        keep[chosen[name]] = False
        dm.remain_indices = torch.nonzero(keep).flatten()
        splits[name] = dm.evaluation_splits()
    assert splits["memory"].keys() == splits["disk"].keys()
    for key, (images, targets) in splits["memory"].items():
        disk_images, disk_targets = splits["disk"][key]
        assert isinstance(disk_images, DiskImages) and torch.equal(disk_targets, targets)
        assert torch.equal(disk_images[:], images), key
