"""The in-memory containers every data source returns, and the source interface."""

import abc
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from natmu_lightning.images import DiskImages, Images


def _describe(t: Images | None) -> str:
    if t is None:
        return "None"
    where = ", on disk" if isinstance(t, DiskImages) else ""
    return f"{str(t.dtype).replace('torch.', '')}{list(t.shape)}{where}"


@dataclass(eq=False, repr=False)
class ImageSplit:
    """One split (train or test) of an image dataset.

    Attributes:
        images: ``uint8`` tensor of shape ``(N, C, H, W)``, made contiguous on creation; or
            :class:`~natmu_lightning.images.DiskImages` of that shape, read per sample.
        targets: ``int64`` tensor of shape ``(N,)`` with the class labels.
        fine_targets: Optional ``int64`` tensor of shape ``(N,)`` with fine labels; only
            set for coarse-label datasets such as CIFAR-20, where ``targets`` are the
            coarse labels.

    Raises:
        ValueError: If dtypes or shapes are wrong.
    """

    images: Images
    targets: torch.Tensor
    fine_targets: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.images, (torch.Tensor, DiskImages)):
            raise ValueError(f"images must be a torch.Tensor or DiskImages, got {type(self.images).__name__}")
        if self.images.dtype != torch.uint8:
            raise ValueError(f"images must have dtype torch.uint8, got {self.images.dtype}")
        if self.images.ndim != 4:
            raise ValueError(f"images must have shape (N, C, H, W), got {tuple(self.images.shape)}")
        if self.images.shape[1] not in (1, 3):
            warnings.warn(
                f"images have {self.images.shape[1]} channels; expected 1 or 3 "
                "(is the tensor (N, H, W, C) instead of (N, C, H, W)?)",
                stacklevel=3,
            )
        n = self.images.shape[0]
        self.targets = self._check_labels("targets", self.targets, n)
        if self.fine_targets is not None:
            self.fine_targets = self._check_labels("fine_targets", self.fine_targets, n)
        if isinstance(self.images, torch.Tensor):
            self.images = self.images.contiguous()

    @staticmethod
    def _check_labels(name: str, labels: Any, n: int) -> torch.Tensor:
        if not isinstance(labels, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
        if labels.dtype != torch.int64:
            raise ValueError(f"{name} must have dtype torch.int64, got {labels.dtype}")
        if labels.ndim != 1 or labels.shape[0] != n:
            raise ValueError(f"{name} must have shape ({n},) to match images, got {tuple(labels.shape)}")
        return labels.contiguous()

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        return (
            f"ImageSplit(images={_describe(self.images)}, targets={_describe(self.targets)}, "
            f"fine_targets={_describe(self.fine_targets)})"
        )


@dataclass(eq=False, repr=False)
class SourceData:
    """A whole dataset: a train split, a test split and class names.

    Attributes:
        train: The training split.
        test: The test split (same image shape as ``train``).
        classes: Target class names; ``classes[i]`` is the name of label ``i``.
        fine_classes: Names of the fine classes; given exactly when the splits carry
            ``fine_targets``.

    Raises:
        ValueError: If the splits disagree in image shape, labels fall outside the
            class range, class names are not unique strings, or ``fine_classes`` and
            ``fine_targets`` are not given together.
    """

    train: ImageSplit
    test: ImageSplit
    classes: list[str]
    fine_classes: list[str] | None = None

    def __post_init__(self) -> None:
        for name in ("train", "test"):
            if not isinstance(getattr(self, name), ImageSplit):
                raise ValueError(f"{name} must be an ImageSplit, got {type(getattr(self, name)).__name__}")
        if self.train.images.shape[1:] != self.test.images.shape[1:]:
            raise ValueError(
                "train and test images must share (C, H, W): got "
                f"{tuple(self.train.images.shape[1:])} and {tuple(self.test.images.shape[1:])}"
            )
        self.classes = self._check_names("classes", self.classes)
        for name, split in (("train", self.train), ("test", self.test)):
            self._check_range(f"{name}.targets", split.targets, len(self.classes))

        has_fine = [s.fine_targets is not None for s in (self.train, self.test)]
        if has_fine[0] != has_fine[1]:
            raise ValueError("fine_targets must be given for both splits or for neither")
        if has_fine[0] != (self.fine_classes is not None):
            raise ValueError("fine_classes must be given exactly when the splits have fine_targets")
        if self.fine_classes is not None:
            self.fine_classes = self._check_names("fine_classes", self.fine_classes)
            for name, split in (("train", self.train), ("test", self.test)):
                assert split.fine_targets is not None  # checked above: both splits have them
                self._check_range(f"{name}.fine_targets", split.fine_targets, len(self.fine_classes))

    @staticmethod
    def _check_names(name: str, names: Sequence[str]) -> list[str]:
        names = list(names)
        if not names:
            raise ValueError(f"{name} must not be empty")
        bad = [c for c in names if not isinstance(c, str)]
        if bad:
            raise ValueError(f"{name} must be strings, got {bad[:3]!r}")
        if len(set(names)) != len(names):
            dup = sorted({c for c in names if names.count(c) > 1})
            raise ValueError(f"{name} must be unique, duplicated: {dup[:5]!r}")
        return names

    @staticmethod
    def _check_range(name: str, labels: torch.Tensor, num: int) -> None:
        if labels.numel() == 0:
            return
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= num:
            raise ValueError(f"{name} must lie in [0, {num - 1}], got values in [{lo}, {hi}]")

    @property
    def num_classes(self) -> int:
        """Number of target classes (``len(classes)``)."""
        return len(self.classes)

    @property
    def num_fine_classes(self) -> int | None:
        """Number of fine classes, or ``None`` when the dataset has no fine labels."""
        return None if self.fine_classes is None else len(self.fine_classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """The ``(C, H, W)`` shape shared by all images."""
        c, h, w = self.train.images.shape[1:]
        return int(c), int(h), int(w)

    def __repr__(self) -> str:
        fine = "" if self.fine_classes is None else f", num_fine_classes={len(self.fine_classes)}"
        return f"SourceData(train={self.train!r}, test={self.test!r}, num_classes={self.num_classes}{fine})"


class DataSource(abc.ABC):
    """A dataset that loads as ``uint8`` images: tensors in memory, or
    :class:`~natmu_lightning.images.DiskImages` read per sample.

    The constructor arguments of a subclass are its configuration; :meth:`load` does
    the (possibly slow) work and must be deterministic.
    """

    @abc.abstractmethod
    def load(self) -> SourceData:
        """Load the dataset: ``uint8`` tensors in memory, or images read per sample from disk.

        Returns:
            The train and test splits with their class names.
        """

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


def default_cache_dir() -> Path:
    """The cache folder: ``$NATMU_CACHE`` if set, else ``~/.cache/natmu-lightning``."""
    env = os.environ.get("NATMU_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "natmu-lightning"
