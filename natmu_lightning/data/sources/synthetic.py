"""Seeded synthetic images for tests and documentation."""

import numpy as np
import torch

from natmu_lightning.data.sources.base import DataSource, ImageSplit, SourceData


class SyntheticImages(DataSource):
    """Seeded random images with a learnable class-dependent pattern; no files needed.

    Each class gets a random mean colour and a random coarse (4x4-block) pattern; every
    image is its class template plus independent Gaussian noise, so a small model learns
    the task quickly. Samples are shuffled with a seeded permutation. Meant for tests
    and documentation.

    Args:
        num_classes: Number of classes.
        train_per_class: Training images per class.
        test_per_class: Test images per class.
        channels: Image channels (1 or 3).
        height: Image height in pixels.
        width: Image width in pixels.
        seed: Random seed; equal seeds give identical data.
        classes: Class names; default ``"class_0"``, ``"class_1"``, ...

    Raises:
        ValueError: If ``num_classes``, ``train_per_class``, ``height`` or ``width`` is below 1,
            ``test_per_class`` is negative, ``channels`` is not 1 or 3, or ``classes`` has the
            wrong length.
    """

    def __init__(
        self,
        num_classes: int = 10,
        train_per_class: int = 20,
        test_per_class: int = 10,
        channels: int = 3,
        height: int = 32,
        width: int = 32,
        seed: int = 0,
        classes: list[str] | None = None,
    ) -> None:
        for name, value, low in (
            ("num_classes", num_classes, 1),
            ("train_per_class", train_per_class, 1),
            ("test_per_class", test_per_class, 0),
            ("height", height, 1),
            ("width", width, 1),
        ):
            if int(value) < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")
        if int(channels) not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        if classes is not None and len(classes) != int(num_classes):
            raise ValueError(f"classes has {len(classes)} names but num_classes is {num_classes}")
        self.num_classes = int(num_classes)
        self.train_per_class = int(train_per_class)
        self.test_per_class = int(test_per_class)
        self.channels = int(channels)
        self.height = int(height)
        self.width = int(width)
        self.seed = int(seed)
        self.classes = None if classes is None else [str(c) for c in classes]

    def load(self) -> SourceData:
        rng = np.random.default_rng(self.seed)
        k, c, h, w = self.num_classes, self.channels, self.height, self.width
        colours = rng.uniform(40, 215, size=(k, c, 1, 1))
        coarse = rng.uniform(-50, 50, size=(k, 1, 4, 4))
        rows = np.minimum(np.arange(h) * 4 // h, 3)
        cols = np.minimum(np.arange(w) * 4 // w, 3)
        templates = colours + coarse[:, :, rows][:, :, :, cols]  # (k, c, h, w)

        def make(per_class: int) -> ImageSplit:
            labels = np.repeat(np.arange(k, dtype=np.int64), per_class)
            noise = rng.normal(0.0, 25.0, size=(labels.size, c, h, w))
            images = np.clip(np.rint(templates[labels] + noise), 0, 255).astype(np.uint8)
            order = rng.permutation(labels.size)
            return ImageSplit(
                torch.from_numpy(np.ascontiguousarray(images[order])),
                torch.from_numpy(labels[order].copy()),
            )

        train = make(self.train_per_class)
        test = make(self.test_per_class)
        classes = self.classes or [f"class_{i}" for i in range(k)]
        return SourceData(train, test, classes)
