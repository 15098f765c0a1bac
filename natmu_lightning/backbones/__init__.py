"""Image classification backbones with built-in input normalisation.

Every backbone takes a float batch in ``[0, 1]`` of shape ``(B, C, H, W)``,
normalises it internally and returns logits of shape ``(B, num_classes)``.
"""

from natmu_lightning.backbones.normalize import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    DIGITS_MEAN,
    DIGITS_STD,
    Normalize,
)
from natmu_lightning.backbones.resnet import ResNet18, ResNet34
from natmu_lightning.backbones.small_cnn import SmallCNN
from natmu_lightning.backbones.vgg import VGG16BN

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "DIGITS_MEAN",
    "DIGITS_STD",
    "Normalize",
    "ResNet18",
    "ResNet34",
    "SmallCNN",
    "VGG16BN",
]
