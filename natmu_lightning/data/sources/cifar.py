"""CIFAR-10, CIFAR-100 and CIFAR-20 from torchvision's on-disk layout (python pickles)."""

import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from natmu_lightning.data.sources.base import DataSource, ImageSplit, SourceData


def _as_str(x: Any) -> Any:
    return x.decode("latin1") if isinstance(x, bytes) else x


def _read_cifar_pickle(path: Path) -> dict[str, Any]:
    """Load a CIFAR pickle as torchvision does; keys and names normalised to ``str``."""
    with open(path, "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    if not isinstance(entry, dict):
        raise ValueError(f"{path} is not a CIFAR pickle (expected a dict, got {type(entry).__name__})")
    return {_as_str(k): v for k, v in entry.items()}


def _cifar_key(entry: dict[str, Any], key: str, path: Path) -> Any:
    if key not in entry:
        raise ValueError(f"{path} has no {key!r} entry (keys: {sorted(entry)})")
    return entry[key]


def _ensure_cifar_files(root: str, folder: str, files: Sequence[str], download: bool, tv_name: str) -> Path:
    """Return ``root/folder``, downloading with torchvision if allowed and needed."""
    base = Path(root).expanduser() / folder
    missing = [f for f in files if not (base / f).is_file()]
    if missing and download:
        import torchvision.datasets

        getattr(torchvision.datasets, tv_name)(str(Path(root).expanduser()), train=True, download=True)
        missing = [f for f in files if not (base / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{tv_name} files not found in {base} (missing: {', '.join(missing)}). Expected "
            f"torchvision's layout '{folder}/' under root={root!r}; pass download=True to "
            "fetch it, or point root at the folder that contains it."
        )
    return base


def _read_cifar_split(base: Path, files: Sequence[str], label_keys: Sequence[str]) -> tuple:
    images: list[np.ndarray] = []
    labels: dict[str, list[np.ndarray]] = {k: [] for k in label_keys}
    for name in files:
        path = base / name
        entry = _read_cifar_pickle(path)
        data = np.asarray(_cifar_key(entry, "data", path), dtype=np.uint8)
        try:
            data = data.reshape(-1, 3, 32, 32)
        except ValueError as e:
            raise ValueError(f"{path}: 'data' of shape {data.shape} is not N x 3072") from e
        images.append(data)
        for k in label_keys:
            lab = np.asarray(_cifar_key(entry, k, path), dtype=np.int64)
            if lab.shape != (data.shape[0],):
                raise ValueError(f"{path}: {k!r} has {lab.size} entries for {data.shape[0]} images")
            labels[k].append(lab)
    image_tensor = torch.from_numpy(np.ascontiguousarray(np.concatenate(images)))
    return image_tensor, {k: torch.from_numpy(np.concatenate(v)) for k, v in labels.items()}


def _read_cifar_names(path: Path, key: str) -> list[str]:
    return [str(_as_str(n)) for n in _cifar_key(_read_cifar_pickle(path), key, path)]


class _TorchvisionCIFAR(DataSource):
    """A CIFAR dataset in torchvision's layout; subclasses name its files and label keys.

    Class attributes:
        folder: The folder under ``root`` (``cifar-10-batches-py``, ``cifar-100-python``).
        train_files, test_files, meta_file: The pickles inside it.
        torchvision_name: The ``torchvision.datasets`` class that downloads it.
        label_key, names_key: The targets and their names (``meta_file``).
        fine_label_key, fine_names_key: Fine labels kept beside coarse targets, or None.
    """

    folder: ClassVar[str]
    train_files: ClassVar[tuple[str, ...]]
    test_files: ClassVar[tuple[str, ...]]
    meta_file: ClassVar[str]
    torchvision_name: ClassVar[str]
    label_key: ClassVar[str]
    names_key: ClassVar[str]
    fine_label_key: ClassVar[str | None] = None
    fine_names_key: ClassVar[str | None] = None

    def __init__(self, root: str = "data", download: bool = False) -> None:
        self.root = str(root)
        self.download = bool(download)

    def load(self) -> SourceData:
        files = [*self.train_files, *self.test_files, self.meta_file]
        base = _ensure_cifar_files(self.root, self.folder, files, self.download, self.torchvision_name)
        keys = [self.label_key] if self.fine_label_key is None else [self.fine_label_key, self.label_key]
        x_tr, y_tr = _read_cifar_split(base, self.train_files, keys)
        x_te, y_te = _read_cifar_split(base, self.test_files, keys)
        classes = _read_cifar_names(base / self.meta_file, self.names_key)
        if self.fine_label_key is None or self.fine_names_key is None:
            return SourceData(ImageSplit(x_tr, y_tr[self.label_key]), ImageSplit(x_te, y_te[self.label_key]), classes)
        return SourceData(
            ImageSplit(x_tr, y_tr[self.label_key], y_tr[self.fine_label_key]),
            ImageSplit(x_te, y_te[self.label_key], y_te[self.fine_label_key]),
            classes,
            fine_classes=_read_cifar_names(base / self.meta_file, self.fine_names_key),
        )


class CIFAR10(_TorchvisionCIFAR):
    """CIFAR-10 from torchvision's on-disk layout (``root/cifar-10-batches-py``).

    The python pickles are read directly (no checksum), so any folder with the same
    layout works. 50,000 train and 10,000 test RGB images of 32x32, 10 classes.

    Args:
        root: Folder that contains ``cifar-10-batches-py``.
        download: If the files are missing, download them with torchvision first.

    Raises:
        FileNotFoundError: From :meth:`load`, if the files are missing and ``download``
            is false.
    """

    folder = "cifar-10-batches-py"
    train_files = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_files = ("test_batch",)
    meta_file = "batches.meta"
    torchvision_name = "CIFAR10"
    label_key, names_key = "labels", "label_names"


class _CIFAR100Layout(_TorchvisionCIFAR):
    """The files of ``cifar-100-python``, shared by CIFAR-100 and CIFAR-20.

    Args:
        root: Folder that contains ``cifar-100-python``.
        download: If the files are missing, download them with torchvision first.

    Raises:
        FileNotFoundError: From :meth:`load`, if the files are missing and ``download``
            is false.
    """

    folder = "cifar-100-python"
    train_files = ("train",)
    test_files = ("test",)
    meta_file = "meta"
    torchvision_name = "CIFAR100"


class CIFAR100(_CIFAR100Layout):
    """CIFAR-100 (100 fine classes) from torchvision's layout (``root/cifar-100-python``).

    Arguments and errors: those of :class:`_CIFAR100Layout` (``root``, ``download``).
    """

    label_key, names_key = "fine_labels", "fine_label_names"


class CIFAR20(_CIFAR100Layout):
    """CIFAR-100 with its 20 coarse superclasses as targets ("CIFAR-20").

    ``targets`` are the coarse labels and ``classes`` the 20 superclass names; the 100
    fine labels are kept as ``fine_targets`` with ``fine_classes`` their names, so
    sub-class forgetting (e.g. forget ``rocket`` inside ``vehicles_2``) is possible.
    Arguments and errors: those of :class:`_CIFAR100Layout` (``root``, ``download``).
    """

    label_key, names_key = "coarse_labels", "coarse_label_names"
    fine_label_key, fine_names_key = "fine_labels", "fine_label_names"
