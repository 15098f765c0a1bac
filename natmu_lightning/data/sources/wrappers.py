"""Sources built from other datasets: any map-style dataset, and a class-balanced subset of a source."""

from typing import Optional

import torch
from tqdm.auto import tqdm

from natmu_lightning.data.sources.base import DataSource, ImageSplit, SourceData
from natmu_lightning.data.sources.decoding import _to_uint8_chw


class MapDataset(DataSource):
    """Wrap any two map-style datasets of ``(image, label)`` pairs.

    Images may be PIL images, numpy ``HW``/``HWC`` arrays, or torch ``CHW``/``HW``
    tensors, either ``uint8`` or float in ``[0, 1]`` (converted with
    ``round(x * 255)``). All images must share one shape.

    Args:
        train: The training dataset (``len()`` and ``[i]`` returning ``(image, label)``).
        test: The test dataset.
        classes: Class names; default ``train.classes`` when it exists, else
            ``"0"`` .. ``str(max label)``.

    Raises:
        ValueError: From :meth:`load`, on unsupported images, mixed image shapes or
            float images outside ``[0, 1]``.
    """

    def __init__(
        self,
        train: torch.utils.data.Dataset,
        test: torch.utils.data.Dataset,
        classes: Optional[list[str]] = None,
    ) -> None:
        self.train = train
        self.test = test
        self.classes = None if classes is None else [str(c) for c in classes]

    @staticmethod
    def _convert(dataset: torch.utils.data.Dataset, name: str) -> ImageSplit:
        n = len(dataset)  # type: ignore[arg-type]
        images: Optional[torch.Tensor] = None
        labels = torch.empty(n, dtype=torch.int64)
        for i in tqdm(range(n), desc=f"converting {name}", leave=False, unit="img"):
            item = dataset[i]
            try:
                image, label = item[0], item[1]
            except (TypeError, IndexError, KeyError) as e:
                raise ValueError(f"{name}[{i}] is not an (image, label) pair") from e
            x = _to_uint8_chw(image, f"{name}[{i}]")
            if images is None:
                images = torch.empty((n, *x.shape), dtype=torch.uint8)
            elif x.shape != images.shape[1:]:
                raise ValueError(
                    f"{name}[{i}] has image shape {tuple(x.shape)} but {name}[0] has "
                    f"{tuple(images.shape[1:])}; all images must share one shape"
                )
            images[i] = x
            labels[i] = int(label)
        if images is None:
            raise ValueError(f"{name} dataset is empty")
        return ImageSplit(images, labels)

    def load(self) -> SourceData:
        train = self._convert(self.train, "train")
        test = self._convert(self.test, "test")
        classes = self.classes
        if classes is None:
            given = getattr(self.train, "classes", None)
            if given is not None:
                classes = [str(c) for c in given]
            else:
                top = max(int(train.targets.max()), int(test.targets.max()))
                classes = [str(i) for i in range(top + 1)]
        return SourceData(train, test, classes)


class ClassBalancedSubset(DataSource):
    """A seeded class-balanced subset of another source's train and test splits.

    Each split is shuffled with a seeded permutation, then the first ``train_per_class``
    (or ``test_per_class``) samples of every class are kept, in their original order.
    Useful to size a real dataset to a CPU budget (the benchmarks' ``cifar10-small``).

    Args:
        source: The full dataset.
        train_per_class: Training samples kept per class (>= 1).
        test_per_class: Test samples kept per class (>= 1).
        seed: Seed of the permutation; the same seed always keeps the same samples.

    Raises:
        ValueError: If a per-class count is below 1, or (from :meth:`load`) a class
            has fewer samples than asked for.

    Example:
        >>> from natmu_lightning.data.sources import SyntheticImages
        >>> full = SyntheticImages(num_classes=3, train_per_class=10, test_per_class=4)
        >>> data = ClassBalancedSubset(full, train_per_class=5, test_per_class=2).load()
        >>> len(data.train), len(data.test), data.train.targets.bincount().tolist()
        (15, 6, [5, 5, 5])
    """

    def __init__(self, source: DataSource, train_per_class: int, test_per_class: int, seed: int = 0) -> None:
        for name, value in (("train_per_class", train_per_class), ("test_per_class", test_per_class)):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.source = source
        self.train_per_class = int(train_per_class)
        self.test_per_class = int(test_per_class)
        self.seed = int(seed)

    def load(self) -> SourceData:
        data = self.source.load()
        num_classes = len(data.classes)

        def take(split: ImageSplit, per_class: int, name: str) -> ImageSplit:
            counts = torch.bincount(split.targets, minlength=num_classes)
            if int(counts.min()) < per_class:
                short = int(counts.argmin())
                raise ValueError(
                    f"{name} split has {int(counts[short])} samples of class {short} "
                    f"({data.classes[short]!r}) but {per_class} per class were asked for"
                )
            order = torch.randperm(len(split), generator=torch.Generator().manual_seed(self.seed))
            keep = torch.cat([order[split.targets[order] == c][:per_class] for c in range(num_classes)]).sort().values
            fine = None if split.fine_targets is None else split.fine_targets[keep]
            return ImageSplit(split.images[keep], split.targets[keep], fine)

        return SourceData(
            take(data.train, self.train_per_class, "train"),
            take(data.test, self.test_per_class, "test"),
            data.classes,
            data.fine_classes,
        )
