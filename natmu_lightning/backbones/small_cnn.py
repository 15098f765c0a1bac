"""A small, fast CNN for tiny inputs (8x8 digits, 28x28 MNIST-like images)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from natmu_lightning.backbones.normalize import DIGITS_MEAN, DIGITS_STD, Normalize, check_backbone_args


def _conv_bn_relu(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)
    )


class SmallCNN(nn.Module):
    """Four conv3x3-BN-ReLU layers with one 2x2 max-pool, global average pool and a linear head.

    Works on any input of at least 2x2 pixels.

    Args:
        num_classes: Number of output logits (>= 2).
        in_channels: Number of input channels (>= 1).
        mean: Per-channel input mean, one entry per input channel.
        std: Per-channel input std, one positive entry per input channel.
        width: Channels of the first two convs; the last two use ``2 * width``.

    Raises:
        ValueError: On invalid arguments.

    Example:
        >>> import torch
        >>> SmallCNN(num_classes=10)(torch.rand(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        mean: Sequence[float] = DIGITS_MEAN,
        std: Sequence[float] = DIGITS_STD,
        width: int = 32,
    ) -> None:
        super().__init__()
        check_backbone_args(num_classes, in_channels, mean, std, width)
        self.normalize = Normalize(mean, std)
        self.features = nn.Sequential(
            _conv_bn_relu(in_channels, width),
            _conv_bn_relu(width, width),
            nn.MaxPool2d(2),
            _conv_bn_relu(width, 2 * width),
            _conv_bn_relu(2 * width, 2 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Map a ``(B, C, H, W)`` batch in ``[0, 1]`` to logits ``(B, num_classes)``."""
        return self.fc(self.features(self.normalize(x)))
