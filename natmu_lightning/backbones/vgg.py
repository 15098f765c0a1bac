"""CIFAR-style VGG-16 with batch norm."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from natmu_lightning.backbones.normalize import CIFAR10_MEAN, CIFAR10_STD, Normalize, check_backbone_args

_VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)  # fmt: skip


class VGG16BN(nn.Module):
    """CIFAR VGG-16-BN: 13 conv3x3-BN-ReLU layers, global average pool, one linear layer.

    Args:
        num_classes: Number of output logits (>= 2).
        in_channels: Number of input channels (>= 1).
        mean: Per-channel input mean, one entry per input channel.
        std: Per-channel input std, one positive entry per input channel.

    Raises:
        ValueError: On invalid arguments.

    Example:
        >>> import torch
        >>> VGG16BN(num_classes=10)(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        mean: Sequence[float] = CIFAR10_MEAN,
        std: Sequence[float] = CIFAR10_STD,
    ) -> None:
        super().__init__()
        check_backbone_args(num_classes, in_channels, mean, std)
        self.normalize = Normalize(mean, std)
        layers: list[nn.Module] = []
        channels = in_channels
        for v in _VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                assert isinstance(v, int)
                layers += [nn.Conv2d(channels, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                channels = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Map a ``(B, C, H, W)`` batch in ``[0, 1]`` to logits ``(B, num_classes)``."""
        x = self.features(self.normalize(x))
        return self.classifier(self.avgpool(x).flatten(1))
