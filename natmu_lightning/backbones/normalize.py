"""Input normalisation layer and dataset statistics shared by all backbones."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

CIFAR10_MEAN: tuple[float, ...] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, ...] = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN: tuple[float, ...] = (0.5071, 0.4865, 0.4409)
CIFAR100_STD: tuple[float, ...] = (0.2673, 0.2564, 0.2762)
# Pixel statistics of sklearn ``load_digits().images / 16.0`` over all pixels.
DIGITS_MEAN: tuple[float, ...] = (0.3053,)
DIGITS_STD: tuple[float, ...] = (0.3760,)


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` normalisation.

    ``mean`` and ``std`` are stored as non-persistent buffers: they follow the
    module across devices and dtypes but are absent from ``state_dict``, so
    plain weights from other code bases load with ``strict=True``.

    Args:
        mean: Per-channel mean.
        std: Per-channel standard deviation; every entry must be positive.

    Raises:
        ValueError: If ``mean`` and ``std`` differ in length, are empty, or a
            std is not positive.

    Example:
        >>> import torch
        >>> norm = Normalize(mean=(0.5,), std=(0.25,))
        >>> norm(torch.ones(1, 1, 2, 2)).flatten().tolist()
        [2.0, 2.0, 2.0, 2.0]
        >>> list(norm.state_dict())
        []
    """

    mean: Tensor
    std: Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean and std must have the same length, got {len(mean)} and {len(std)}")
        if len(mean) == 0:
            raise ValueError("mean and std must not be empty")
        if any(s <= 0 for s in std):
            raise ValueError(f"every std must be > 0, got {tuple(std)}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """Normalise a ``(B, C, H, W)`` batch."""
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def check_backbone_args(
    num_classes: int, in_channels: int, mean: Sequence[float], std: Sequence[float], width: int | None = None
) -> None:
    """Validate the constructor arguments shared by every backbone (``width``: of those that have one).

    Raises:
        ValueError: Naming the offending argument.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    if len(mean) != in_channels:
        raise ValueError(f"mean must have in_channels={in_channels} entries, got {len(mean)}")
    if len(std) != in_channels:
        raise ValueError(f"std must have in_channels={in_channels} entries, got {len(std)}")
    if width is not None and width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
