"""Sources built from other datasets: any map-style dataset, and a class-balanced subset of a source."""

import torch
from tqdm.auto import tqdm

from natmu_lightning.checks import check_integer
from natmu_lightning.data.sources.base import DataSource, ImageSplit, SourceData
from natmu_lightning.data.sources.on_disk import DatasetItemReader
from natmu_lightning.images import DiskImages, take


class MapDataset(DataSource):
    """Wrap any two map-style datasets of ``(image, label)`` pairs, in memory or on disk.

    Images may be PIL images, numpy ``HW``/``HWC`` arrays, or torch ``CHW``/``HW``
    tensors, either ``uint8`` or float in ``[0, 1]`` (converted with
    ``round(x * 255)``). All images must share one shape, unless ``image_size`` resizes them.
    Items may also be mappings (``image_key`` and ``label_key``), as litdata stores them.

    With ``on_disk=True`` nothing is converted up front: each sample is read from the
    dataset when a batch needs it, in the DataLoader workers (training) or in
    ``num_workers`` evaluation workers (:class:`~natmu_lightning.images.DiskImages`), so
    memory does not grow with the dataset. The labels are read once at :meth:`load`: from
    the dataset's ``targets`` when it has one per sample, else item by item (each image is
    decoded once, which also checks its size). The dataset must then return the same
    sample for the same index every time (no random augmentation inside it) and, under
    the ``spawn`` start method, be picklable.

    Args:
        train: The training dataset (``len()`` and ``[i]`` returning ``(image, label)``).
        test: The test dataset.
        classes: Class names; default ``train.classes`` when it exists, else
            ``"0"`` .. ``str(max label)``.
        on_disk: Read samples when needed instead of converting all into memory.
        image_size: Resize every image to ``image_size x image_size`` (bilinear).
        num_workers: On disk: worker processes decoding evaluation passes.
        image_key: The image's key when items are mappings.
        label_key: The label's key when items are mappings.

    Raises:
        ValueError: From :meth:`load` (or, on disk, when a batch reads the sample), on
            unsupported images, mixed image shapes or float images outside ``[0, 1]``;
            the message names the sample (``train[17]``).
    """

    def __init__(
        self,
        train: torch.utils.data.Dataset,
        test: torch.utils.data.Dataset,
        classes: list[str] | None = None,
        on_disk: bool = False,
        image_size: int | None = None,
        num_workers: int = 2,
        image_key: str = "image",
        label_key: str = "label",
    ) -> None:
        if image_size is not None and int(image_size) <= 0:
            raise ValueError(f"image_size must be positive, got {image_size}")
        check_integer("num_workers", num_workers, 0)
        self.train = train
        self.test = test
        self.classes = None if classes is None else [str(c) for c in classes]
        self.on_disk, self.image_size, self.num_workers = on_disk, image_size, num_workers
        self.image_key, self.label_key = image_key, label_key

    def _split(self, dataset: torch.utils.data.Dataset, name: str) -> ImageSplit:
        reader = DatasetItemReader(dataset, name, self.image_size, self.image_key, self.label_key)
        if not self.on_disk:
            return self._convert(reader, name)
        labels = reader.labels()
        assert reader.shape is not None  # set by labels()
        return ImageSplit(DiskImages(reader, reader.shape, len(reader), self.num_workers), labels)

    @staticmethod
    def _convert(reader: DatasetItemReader, name: str) -> ImageSplit:
        n = len(reader)
        images: torch.Tensor | None = None
        labels = torch.empty(n, dtype=torch.int64)
        for i in tqdm(range(n), desc=f"converting {name}", leave=False, unit="img"):
            x, label = reader.parts(i)
            if images is None:
                reader.shape = tuple(x.shape)
                images = torch.empty((n, *x.shape), dtype=torch.uint8)
            images[i] = reader.checked(i, x)
            labels[i] = int(label)
        if images is None:
            raise ValueError(f"{name} dataset is empty")
        return ImageSplit(images, labels)

    def load(self) -> SourceData:
        train = self._split(self.train, "train")
        test = self._split(self.test, "test")
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

        def balanced(split: ImageSplit, per_class: int, name: str) -> ImageSplit:
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
            return ImageSplit(take(split.images, keep), split.targets[keep], fine)

        return SourceData(
            balanced(data.train, self.train_per_class, "train"),
            balanced(data.test, self.test_per_class, "test"),
            data.classes,
            data.fine_classes,
        )
