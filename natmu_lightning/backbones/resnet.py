"""CIFAR-style ResNets (3x3 stem, no max-pool)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from natmu_lightning.backbones.normalize import CIFAR10_MEAN, CIFAR10_STD, Normalize, check_backbone_args


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity or 1x1-projection shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class _CifarResNet(nn.Module):
    """A CIFAR ResNet of BasicBlock stages ``num_blocks`` (set by each subclass).

    Args:
        num_classes: Number of output logits (>= 2).
        in_channels: Number of input channels (>= 1).
        mean: Per-channel input mean, one entry per input channel.
        std: Per-channel input std, one positive entry per input channel.
        width: Channels of the first stage; stage ``i`` has ``width * 2**i``. The
            published network has 64; narrower ones suit CPU benchmarks.

    Raises:
        ValueError: On invalid arguments.
    """

    num_blocks: tuple[int, int, int, int]

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        mean: Sequence[float] = CIFAR10_MEAN,
        std: Sequence[float] = CIFAR10_STD,
        width: int = 64,
    ) -> None:
        num_blocks = self.num_blocks
        super().__init__()
        check_backbone_args(num_classes, in_channels, mean, std, width)
        self.normalize = Normalize(mean, std)
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        in_planes = width
        stages = []
        for planes, blocks, stride in zip((width, 2 * width, 4 * width, 8 * width), num_blocks, (1, 2, 2, 2)):
            layers = []
            for s in [stride] + [1] * (blocks - 1):
                layers.append(BasicBlock(in_planes, planes, s))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8 * width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Map a ``(B, C, H, W)`` batch in ``[0, 1]`` to logits ``(B, num_classes)``."""
        x = self.relu(self.bn1(self.conv1(self.normalize(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


class ResNet18(_CifarResNet):
    """CIFAR ResNet-18: BasicBlock stages ``[2, 2, 2, 2]``; arguments as :class:`_CifarResNet`.

    Example:
        >>> import torch
        >>> ResNet18(num_classes=10)(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    num_blocks = (2, 2, 2, 2)


class ResNet34(_CifarResNet):
    """CIFAR ResNet-34: BasicBlock stages ``[3, 4, 6, 3]``; arguments and use as :class:`ResNet18`."""

    num_blocks = (3, 4, 6, 3)
