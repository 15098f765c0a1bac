"""Datasets stored as folders of image files: Tiny ImageNet and one-folder-per-class trees
(in memory, or kept on disk with ``ImageFolder(on_disk=True)``)."""

from pathlib import Path

from natmu_lightning.checks import check_integer
from natmu_lightning.data.sources.base import DataSource, ImageSplit, SourceData
from natmu_lightning.data.sources.decoding import IMAGE_EXTENSIONS, _check_mode, _decode_image_files, _labels
from natmu_lightning.data.sources.on_disk import ImageFileReader
from natmu_lightning.images import DiskImages


def _is_image_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


class TinyImageNet(DataSource):
    """Tiny ImageNet (200 classes, 64x64 RGB) from its standard folder layout.

    Expects ``wnids.txt``, ``words.txt`` (optional), ``train/<wnid>/images/*.JPEG``
    and ``val/images/*.JPEG`` with ``val/val_annotations.txt``. The labelled ``val``
    split is used as the test split. Label ``i`` is the ``i``-th wnid in sorted order
    (the order of ``torchvision.datasets.ImageFolder`` on ``train/``); the class name
    is the first comma-separated name from ``words.txt``, or the wnid if absent.

    Args:
        root: The ``tiny-imagenet-200`` folder.

    Raises:
        FileNotFoundError: From :meth:`load`, if the expected files are missing.
    """

    def __init__(self, root: str = "data/tiny-imagenet-200") -> None:
        self.root = str(root)

    def load(self) -> SourceData:
        root = Path(self.root).expanduser()
        wnids_file = root / "wnids.txt"
        annotations = root / "val" / "val_annotations.txt"
        for required in (wnids_file, root / "train", annotations):
            if not required.exists():
                raise FileNotFoundError(
                    f"Tiny ImageNet: {required} not found; root={self.root!r} must be the "
                    "extracted 'tiny-imagenet-200' folder (wnids.txt, train/, val/)"
                )
        wnids = sorted({w.strip() for w in wnids_file.read_text().split() if w.strip()})
        index = {w: i for i, w in enumerate(wnids)}

        train_files: list[Path] = []
        train_labels: list[int] = []
        for w in wnids:
            folder = root / "train" / w / "images"
            if not folder.is_dir():
                raise FileNotFoundError(f"Tiny ImageNet: missing train folder {folder}")
            files = sorted(p for p in folder.iterdir() if _is_image_file(p))
            train_files += files
            train_labels += [index[w]] * len(files)

        val_files: list[Path] = []
        val_labels: list[int] = []
        for line_no, line in enumerate(annotations.read_text().splitlines(), 1):
            parts = line.split("\t") if "\t" in line else line.split()
            if not line.strip():
                continue
            if len(parts) < 2 or parts[1] not in index:
                raise ValueError(f"{annotations}:{line_no}: bad line {line!r}")
            val_files.append(root / "val" / "images" / parts[0])
            val_labels.append(index[parts[1]])

        names = self._names(root / "words.txt", wnids)
        return SourceData(
            ImageSplit(
                _decode_image_files(train_files, "RGB", desc="Tiny ImageNet train"),
                _labels(train_labels),
            ),
            ImageSplit(
                _decode_image_files(val_files, "RGB", desc="Tiny ImageNet val"),
                _labels(val_labels),
            ),
            names,
        )

    @staticmethod
    def _names(words_file: Path, wnids: list[str]) -> list[str]:
        words: dict[str, str] = {}
        if words_file.is_file():
            wanted = set(wnids)
            for line in words_file.read_text(encoding="utf-8", errors="replace").splitlines():
                wnid, _, text = line.partition("\t")
                if wnid in wanted:
                    name = text.split(",")[0].strip()
                    if name:
                        words[wnid] = name
        names = [words.get(w, w) for w in wnids]
        # First names are not unique in all of WordNet; fall back to the wnid on clashes.
        counts: dict[str, int] = {}
        for n in names:
            counts[n] = counts.get(n, 0) + 1
        return [n if counts[n] == 1 else f"{n} ({w})" for n, w in zip(names, wnids)]


class ImageFolder(DataSource):
    """Two folders of images with one subfolder per class.

    Class names are the sorted subfolder names, which must be the same in both roots.
    Files inside a class folder are read in sorted order; hidden files and files
    without an image suffix are skipped.

    Args:
        train_root: Folder of the training images (``train_root/<class>/<image>``).
        test_root: Folder of the test images, same class subfolders.
        image_size: If given, resize every image to ``image_size x image_size``
            (bilinear); otherwise all images must share one size.
        mode: ``"RGB"`` (3 channels) or ``"L"`` (greyscale, 1 channel).
        on_disk: Keep the images on disk and decode each when a batch needs it, in the
            DataLoader workers (the datamodule's ``num_workers``) for training and in
            ``num_workers`` evaluation workers for the model passes
            (:class:`~natmu_lightning.images.DiskImages`): memory then does not grow with
            the dataset. :meth:`load` still reads every file's header, so an unreadable
            file (or, without ``image_size``, one of another size) is refused before any
            training, naming the file. ``False`` decodes everything into memory at
            :meth:`load` (faster for sets that fit).
        num_workers: On disk: worker processes decoding evaluation passes.

    Raises:
        ValueError: If ``mode``, ``image_size`` or ``num_workers`` is invalid; from
            :meth:`load`, if the roots have different class sets, a split has no images,
            a file cannot be read, or image sizes differ without ``image_size``.
        FileNotFoundError: From :meth:`load`, if a root does not exist.
    """

    def __init__(
        self,
        train_root: str,
        test_root: str,
        image_size: int | None = None,
        mode: str = "RGB",
        on_disk: bool = False,
        num_workers: int = 2,
    ) -> None:
        if image_size is not None and int(image_size) <= 0:
            raise ValueError(f"image_size must be positive, got {image_size}")
        check_integer("num_workers", num_workers, 0)
        self.train_root = str(train_root)
        self.test_root = str(test_root)
        self.image_size = None if image_size is None else int(image_size)
        self.mode = _check_mode(mode)
        self.on_disk, self.num_workers = on_disk, num_workers

    @staticmethod
    def _class_dirs(root: Path) -> list[str]:
        if not root.is_dir():
            raise FileNotFoundError(f"image folder not found: {root}")
        return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def _split(self, root: Path, classes: list[str], name: str) -> ImageSplit:
        files: list[Path] = []
        labels: list[int] = []
        for i, c in enumerate(classes):
            found = sorted(p for p in (root / c).iterdir() if _is_image_file(p))
            files += found
            labels += [i] * len(found)
        if not files:
            raise ValueError(f"no image files found under {root}")
        if self.on_disk:
            reader = ImageFileReader(files, self.mode, self.image_size)
            shape = reader.image_shape(f"{name} images")
            return ImageSplit(DiskImages(reader, shape, len(files), self.num_workers), _labels(labels))
        images = _decode_image_files(files, self.mode, self.image_size, desc=f"{name} images")
        return ImageSplit(images, _labels(labels))

    def load(self) -> SourceData:
        train_root = Path(self.train_root).expanduser()
        test_root = Path(self.test_root).expanduser()
        classes = self._class_dirs(train_root)
        test_classes = self._class_dirs(test_root)
        if classes != test_classes:
            only_train = sorted(set(classes) - set(test_classes))
            only_test = sorted(set(test_classes) - set(classes))
            raise ValueError(
                f"train and test roots have different class folders: only in {train_root}: "
                f"{only_train}; only in {test_root}: {only_test}"
            )
        if not classes:
            raise ValueError(f"no class subfolders in {train_root}")
        train = self._split(train_root, classes, "train")
        test = self._split(test_root, classes, "test")
        if train.images.shape[1:] != test.images.shape[1:]:
            raise ValueError(
                f"train images are {tuple(train.images.shape[2:])} but test images are "
                f"{tuple(test.images.shape[2:])}; pass image_size to resize all images"
            )
        return SourceData(train, test, classes)
