"""Benchmark presets: data, backbone and recipes shared by speed.py (and quality runs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from natmu_lightning.backbones import CIFAR10_MEAN, CIFAR10_STD, SmallCNN
from natmu_lightning.data import CIFAR10JPEG, DataSource, Digits
from natmu_lightning.data.sources import ImageSplit, SourceData

REPO = Path(__file__).resolve().parents[1]
CIFAR10_JPEG = REPO.parent / "shared" / "data" / "cifar10_jpeg.npz"


class Subset(DataSource):
    """The first ``train_per_class`` / ``test_per_class`` samples of each class of a source,
    after a seeded shuffle (the JPEG file is sorted by class)."""

    def __init__(self, source: DataSource, train_per_class: int, test_per_class: int, seed: int = 0) -> None:
        self.source, self.train_per_class, self.test_per_class, self.seed = source, train_per_class, test_per_class, seed

    def load(self) -> SourceData:
        data = self.source.load()

        def take(split: ImageSplit, per_class: int) -> ImageSplit:
            order = torch.randperm(split.targets.numel(), generator=torch.Generator().manual_seed(self.seed))
            keep = torch.cat([order[split.targets[order] == c][:per_class] for c in range(len(data.classes))]).sort().values
            return ImageSplit(split.images[keep].contiguous(), split.targets[keep].contiguous())

        return SourceData(take(data.train, self.train_per_class), take(data.test, self.test_per_class), data.classes)


@dataclass(frozen=True)
class Preset:
    name: str
    source: Callable[[], DataSource]
    backbone: Callable[[], nn.Module]
    batch_size: int
    crop_padding: int
    horizontal_flip: bool
    classifier_epochs: int
    classifier_lr: float
    unlearn_epochs: int = 5
    natmu: dict = field(default_factory=lambda: {"lr": 1e-3, "weight_decay": 2e-3, "delta": -0.19})


PRESETS = {
    "digits": Preset(
        name="digits",
        source=Digits,
        backbone=lambda: SmallCNN(num_classes=10),
        batch_size=64,
        crop_padding=1,
        horizontal_flip=False,
        classifier_epochs=30,
        classifier_lr=0.05,
    ),
    "cifar10-small": Preset(
        name="cifar10-small",
        source=lambda: Subset(CIFAR10JPEG(str(CIFAR10_JPEG)), train_per_class=1000, test_per_class=200),
        backbone=lambda: SmallCNN(num_classes=10, in_channels=3, mean=CIFAR10_MEAN, std=CIFAR10_STD, width=32),
        batch_size=128,
        crop_padding=4,
        horizontal_flip=True,
        classifier_epochs=30,
        classifier_lr=0.05,
    ),
}
