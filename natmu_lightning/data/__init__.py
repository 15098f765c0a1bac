"""Datasets, forget requests and the ForgetRemainDataModule."""

from natmu_lightning.data.contracts import TrainingNeeds, UnlearningData
from natmu_lightning.data.datamodule import ForgetRemainDataModule
from natmu_lightning.data.requests import (
    ClassForget,
    ForgetRequest,
    HardestForget,
    IndexForget,
    RandomForget,
    SubclassForget,
)
from natmu_lightning.data.sources import (
    CIFAR10,
    CIFAR10JPEG,
    CIFAR20,
    CIFAR100,
    ClassBalancedSubset,
    DataSource,
    Digits,
    ImageFolder,
    ImageSplit,
    LitData,
    MapDataset,
    SourceData,
    SyntheticImages,
    TinyImageNet,
)

__all__ = [
    "CIFAR10",
    "CIFAR10JPEG",
    "CIFAR20",
    "CIFAR100",
    "ClassBalancedSubset",
    "ClassForget",
    "DataSource",
    "Digits",
    "ForgetRemainDataModule",
    "ForgetRequest",
    "HardestForget",
    "ImageFolder",
    "ImageSplit",
    "IndexForget",
    "LitData",
    "MapDataset",
    "RandomForget",
    "SourceData",
    "SubclassForget",
    "SyntheticImages",
    "TinyImageNet",
    "TrainingNeeds",
    "UnlearningData",
]
