"""In-memory image datasets.

Every dataset in ``natmu_lightning`` is loaded fully into memory as ``uint8`` tensors
through a :class:`DataSource`. The rest of the package (forget requests, the
datamodule, hybrid methods) only ever sees the resulting :class:`SourceData`, so a new
dataset only needs a new :class:`DataSource` subclass.

Sources are configured from YAML by jsonargparse, e.g.::

    source:
      class_path: natmu_lightning.data.sources.CIFAR10
      init_args:
        root: data
        download: false  # true lets torchvision fetch missing files (needs internet)

All sources are deterministic: repeated calls to :meth:`DataSource.load` return
identical tensors.

>>> data = SyntheticImages(num_classes=3, train_per_class=4, test_per_class=2).load()
>>> data.train.images.dtype, tuple(data.train.images.shape), data.num_classes
(torch.uint8, (12, 3, 32, 32), 3)
>>> Digits().load().test
ImageSplit(images=uint8[540, 1, 8, 8], targets=int64[540], fine_targets=None)
"""

import abc
import hashlib
import io
import math
import os
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from natmu_lightning.io import atomic_save_npy

__all__ = [
    "ImageSplit",
    "SourceData",
    "DataSource",
    "Digits",
    "CIFAR10",
    "CIFAR100",
    "CIFAR20",
    "CIFAR10JPEG",
    "TinyImageNet",
    "ImageFolder",
    "MapDataset",
    "SyntheticImages",
    "default_cache_dir",
]

#: File name suffixes treated as images by :class:`ImageFolder`.
IMAGE_EXTENSIONS = (
    ".bmp",
    ".gif",
    ".jpeg",
    ".jpg",
    ".pgm",
    ".png",
    ".ppm",
    ".tif",
    ".tiff",
    ".webp",
)


# --------------------------------------------------------------------------------------
# Containers
# --------------------------------------------------------------------------------------


def _describe(t: Optional[torch.Tensor]) -> str:
    if t is None:
        return "None"
    return f"{str(t.dtype).replace('torch.', '')}{list(t.shape)}"


@dataclass(eq=False, repr=False)
class ImageSplit:
    """One split (train or test) of an in-memory image dataset.

    Attributes:
        images: ``uint8`` tensor of shape ``(N, C, H, W)``; made contiguous on creation.
        targets: ``int64`` tensor of shape ``(N,)`` with the class labels.
        fine_targets: Optional ``int64`` tensor of shape ``(N,)`` with fine labels; only
            set for coarse-label datasets such as CIFAR-20, where ``targets`` are the
            coarse labels.

    Raises:
        ValueError: If dtypes or shapes are wrong.
    """

    images: torch.Tensor
    targets: torch.Tensor
    fine_targets: Optional[torch.Tensor] = None

    def __post_init__(self) -> None:
        if not isinstance(self.images, torch.Tensor):
            raise ValueError(f"images must be a torch.Tensor, got {type(self.images).__name__}")
        if self.images.dtype != torch.uint8:
            raise ValueError(f"images must have dtype torch.uint8, got {self.images.dtype}")
        if self.images.ndim != 4:
            raise ValueError(
                f"images must have shape (N, C, H, W), got {tuple(self.images.shape)}"
            )
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
        self.images = self.images.contiguous()

    @staticmethod
    def _check_labels(name: str, labels: Any, n: int) -> torch.Tensor:
        if not isinstance(labels, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
        if labels.dtype != torch.int64:
            raise ValueError(f"{name} must have dtype torch.int64, got {labels.dtype}")
        if labels.ndim != 1 or labels.shape[0] != n:
            raise ValueError(
                f"{name} must have shape ({n},) to match images, got {tuple(labels.shape)}"
            )
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
    """A whole dataset in memory: a train split, a test split and class names.

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
    fine_classes: Optional[list[str]] = None

    def __post_init__(self) -> None:
        for name in ("train", "test"):
            if not isinstance(getattr(self, name), ImageSplit):
                raise ValueError(
                    f"{name} must be an ImageSplit, got {type(getattr(self, name)).__name__}"
                )
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
                self._check_range(
                    f"{name}.fine_targets", split.fine_targets, len(self.fine_classes)
                )

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
    def num_fine_classes(self) -> Optional[int]:
        """Number of fine classes, or ``None`` when the dataset has no fine labels."""
        return None if self.fine_classes is None else len(self.fine_classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """The ``(C, H, W)`` shape shared by all images."""
        c, h, w = self.train.images.shape[1:]
        return int(c), int(h), int(w)

    def __repr__(self) -> str:
        fine = "" if self.fine_classes is None else f", num_fine_classes={len(self.fine_classes)}"
        return (
            f"SourceData(train={self.train!r}, test={self.test!r}, "
            f"num_classes={self.num_classes}{fine})"
        )


class DataSource(abc.ABC):
    """A dataset that loads into memory as ``uint8`` tensors.

    The constructor arguments of a subclass are its configuration; :meth:`load` does
    the (possibly slow) work and must be deterministic.
    """

    @abc.abstractmethod
    def load(self) -> SourceData:
        """Load the whole dataset into memory.

        Returns:
            The train and test splits with their class names.
        """

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


# --------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------


def _labels(values: Any) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values, dtype=np.int64))


def _hwc_to_chw(array: np.ndarray) -> torch.Tensor:
    """(N, H, W, C) uint8 numpy array -> contiguous (N, C, H, W) uint8 tensor."""
    return torch.from_numpy(np.ascontiguousarray(array.transpose(0, 3, 1, 2)))


def _check_mode(mode: str) -> str:
    if mode not in ("RGB", "L"):
        raise ValueError(f"mode must be 'RGB' or 'L', got {mode!r}")
    return mode


def _decode_image_files(
    paths: Sequence[Path],
    mode: str = "RGB",
    image_size: Optional[int] = None,
    desc: str = "decoding images",
) -> torch.Tensor:
    """Decode image files into one ``uint8`` tensor ``(N, C, H, W)``.

    Args:
        paths: The image files, in output order.
        mode: Pillow mode to convert to, ``"RGB"`` (3 channels) or ``"L"`` (1 channel).
        image_size: If given, every image is resized to ``image_size x image_size``;
            otherwise all images must already share one size.
        desc: Label of the progress bar.

    Returns:
        The decoded images.

    Raises:
        ValueError: If ``image_size`` is not given and an image's size differs from the
            first image's, or a file cannot be decoded.
    """
    _check_mode(mode)
    channels = 3 if mode == "RGB" else 1
    if image_size is not None:
        size: Optional[tuple[int, int]] = (int(image_size), int(image_size))
    else:
        size = None
    out: Optional[np.ndarray] = None
    first: Optional[Path] = None
    for i, path in enumerate(tqdm(paths, desc=desc, leave=False, unit="img")):
        try:
            with Image.open(path) as img:
                img = img.convert(mode)
                if image_size is not None and img.size != size:
                    img = img.resize(size, Image.Resampling.BILINEAR)
                arr = np.asarray(img, dtype=np.uint8)
        except (OSError, SyntaxError) as e:  # Pillow raises these for broken files
            raise ValueError(f"cannot decode image file {path}: {e}") from e
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if out is None:
            first = Path(path)
            out = np.empty((len(paths), *arr.shape[:2], channels), dtype=np.uint8)
        elif arr.shape[:2] != out.shape[1:3]:
            raise ValueError(
                f"image {path} has size {arr.shape[1]}x{arr.shape[0]} (WxH) but {first} has "
                f"{out.shape[2]}x{out.shape[1]}; pass image_size to resize all images"
            )
        out[i] = arr
    if out is None:
        h = w = int(image_size) if image_size is not None else 0
        return torch.empty((0, channels, h, w), dtype=torch.uint8)
    return _hwc_to_chw(out)


def _pil_to_array(img: Image.Image) -> np.ndarray:
    if img.mode not in ("L", "RGB"):
        img = img.convert("L" if img.mode in ("1", "I", "I;16", "F") else "RGB")
    return np.asarray(img, dtype=np.uint8)


def _float_to_uint8(x: torch.Tensor, where: str) -> torch.Tensor:
    x = x.detach().to(torch.float32)
    if x.numel() and (float(x.min()) < -1e-6 or float(x.max()) > 1 + 1e-6):
        raise ValueError(
            f"{where}: float images must lie in [0, 1], got values in "
            f"[{float(x.min()):.4g}, {float(x.max()):.4g}] (was a Normalize transform applied?)"
        )
    return torch.round(x.clamp(0, 1) * 255).to(torch.uint8)


def _to_uint8_chw(image: Any, where: str) -> torch.Tensor:
    """Convert a PIL image, an HW/HWC numpy array or a CHW/HW tensor to uint8 CHW."""
    if isinstance(image, Image.Image):
        arr = _pil_to_array(image)
        image = torch.from_numpy(arr[:, :, None] if arr.ndim == 2 else arr.copy()).permute(2, 0, 1)
    elif isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3:
            raise ValueError(f"{where}: numpy images must be HW or HWC, got shape {image.shape}")
        image = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    elif isinstance(image, torch.Tensor):
        if image.ndim == 2:
            image = image.unsqueeze(0)
        if image.ndim != 3:
            raise ValueError(
                f"{where}: tensor images must be CHW or HW, got shape {tuple(image.shape)}"
            )
    else:
        raise ValueError(
            f"{where}: unsupported image type {type(image).__name__} "
            "(expected PIL image, numpy array or torch tensor)"
        )
    if image.dtype == torch.uint8:
        return image.contiguous()
    if image.is_floating_point():
        return _float_to_uint8(image, where).contiguous()
    if image.dtype == torch.bool:
        return (image.to(torch.uint8) * 255).contiguous()
    if image.numel() and (int(image.min()) < 0 or int(image.max()) > 255):
        raise ValueError(
            f"{where}: integer images must lie in [0, 255], got values in "
            f"[{int(image.min())}, {int(image.max())}]"
        )
    return image.to(torch.uint8).contiguous()


def default_cache_dir() -> Path:
    """The cache folder: ``$NATMU_CACHE`` if set, else ``~/.cache/natmu-lightning``."""
    env = os.environ.get("NATMU_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "natmu-lightning"


# --------------------------------------------------------------------------------------
# scikit-learn digits
# --------------------------------------------------------------------------------------


class Digits(DataSource):
    """scikit-learn's 8x8 handwritten digits (1797 images, 10 classes).

    The data ships inside the scikit-learn wheel, so it loads in milliseconds with no
    network. Grey levels 0..16 are scaled to ``uint8`` with ``round(v * 255 / 16)``;
    images have shape ``(1, 8, 8)``. The train/test split is stratified and seeded.

    Clean digits are so easy that a small CNN reaches 99% test accuracy: Retrain then
    still classifies a random forget set as well as the original does, and there is
    nothing to unlearn. ``noise_std > 0`` adds to every image a fixed Gaussian noise
    pattern (one draw per image from ``noise_seed``, the same whatever the split), which
    makes the original fit its training images by memorising them, as the paper's
    CIFAR-10 model does. The ``configs/digits`` presets use ``noise_std=0.25``.

    Args:
        test_fraction: Fraction of the images in the test split, in (0, 1).
        split_seed: Seed of the stratified train/test split.
        noise_std: Standard deviation of the added noise, as a fraction of the full
            pixel range (0.25 is about 64 grey levels); 0 loads the clean images.
        noise_seed: Seed of the noise patterns.

    Raises:
        ValueError: If ``test_fraction`` is not strictly between 0 and 1, or
            ``noise_std`` is negative or not finite.
    """

    def __init__(self, test_fraction: float = 0.3, split_seed: int = 0, noise_std: float = 0.0,
                 noise_seed: int = 0) -> None:
        if not 0.0 < float(test_fraction) < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        if not (math.isfinite(float(noise_std)) and float(noise_std) >= 0.0):
            raise ValueError(f"noise_std must be a finite number >= 0, got {noise_std}")
        self.test_fraction = float(test_fraction)
        self.split_seed = int(split_seed)
        self.noise_std = float(noise_std)
        self.noise_seed = int(noise_seed)

    def load(self) -> SourceData:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        pixels = np.asarray(digits.images, dtype=np.float64) * 255.0 / 16.0
        if self.noise_std > 0:
            noise = np.random.default_rng(self.noise_seed).normal(0.0, self.noise_std * 255.0, pixels.shape)
            pixels = np.clip(pixels + noise, 0.0, 255.0)
        pixels = np.rint(pixels)
        images = torch.from_numpy(pixels.astype(np.uint8)[:, None, :, :].copy())
        targets = np.asarray(digits.target, dtype=np.int64)
        train_idx, test_idx = train_test_split(
            np.arange(len(targets)),
            test_size=self.test_fraction,
            stratify=targets,
            random_state=self.split_seed,
        )
        train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)

        def split(idx: np.ndarray) -> ImageSplit:
            i = torch.from_numpy(idx)
            return ImageSplit(images[i].contiguous(), torch.from_numpy(targets[idx].copy()))

        return SourceData(split(train_idx), split(test_idx), [str(i) for i in range(10)])


# --------------------------------------------------------------------------------------
# CIFAR (torchvision's on-disk layout)
# --------------------------------------------------------------------------------------

_CIFAR10_FOLDER = "cifar-10-batches-py"
_CIFAR10_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
_CIFAR10_TEST = ["test_batch"]
_CIFAR10_META = "batches.meta"
_CIFAR100_FOLDER = "cifar-100-python"
_CIFAR100_TRAIN = ["train"]
_CIFAR100_TEST = ["test"]
_CIFAR100_META = "meta"


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


def _ensure_cifar_files(
    root: str, folder: str, files: Sequence[str], download: bool, tv_name: str
) -> Path:
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
    images, labels = [], {k: [] for k in label_keys}
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


class CIFAR10(DataSource):
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

    def __init__(self, root: str = "data", download: bool = False) -> None:
        self.root = str(root)
        self.download = bool(download)

    def load(self) -> SourceData:
        files = [*_CIFAR10_TRAIN, *_CIFAR10_TEST, _CIFAR10_META]
        base = _ensure_cifar_files(self.root, _CIFAR10_FOLDER, files, self.download, "CIFAR10")
        x_tr, y_tr = _read_cifar_split(base, _CIFAR10_TRAIN, ["labels"])
        x_te, y_te = _read_cifar_split(base, _CIFAR10_TEST, ["labels"])
        classes = _read_cifar_names(base / _CIFAR10_META, "label_names")
        return SourceData(
            ImageSplit(x_tr, y_tr["labels"]), ImageSplit(x_te, y_te["labels"]), classes
        )


def _load_cifar100(root: str, download: bool, coarse: bool) -> SourceData:
    files = [*_CIFAR100_TRAIN, *_CIFAR100_TEST, _CIFAR100_META]
    base = _ensure_cifar_files(root, _CIFAR100_FOLDER, files, download, "CIFAR100")
    keys = ["fine_labels", "coarse_labels"] if coarse else ["fine_labels"]
    x_tr, y_tr = _read_cifar_split(base, _CIFAR100_TRAIN, keys)
    x_te, y_te = _read_cifar_split(base, _CIFAR100_TEST, keys)
    fine_names = _read_cifar_names(base / _CIFAR100_META, "fine_label_names")
    if not coarse:
        return SourceData(
            ImageSplit(x_tr, y_tr["fine_labels"]), ImageSplit(x_te, y_te["fine_labels"]), fine_names
        )
    coarse_names = _read_cifar_names(base / _CIFAR100_META, "coarse_label_names")
    return SourceData(
        ImageSplit(x_tr, y_tr["coarse_labels"], y_tr["fine_labels"]),
        ImageSplit(x_te, y_te["coarse_labels"], y_te["fine_labels"]),
        coarse_names,
        fine_classes=fine_names,
    )


class CIFAR100(DataSource):
    """CIFAR-100 (100 fine classes) from torchvision's layout (``root/cifar-100-python``).

    Args:
        root: Folder that contains ``cifar-100-python``.
        download: If the files are missing, download them with torchvision first.

    Raises:
        FileNotFoundError: From :meth:`load`, if the files are missing and ``download``
            is false.
    """

    def __init__(self, root: str = "data", download: bool = False) -> None:
        self.root = str(root)
        self.download = bool(download)

    def load(self) -> SourceData:
        return _load_cifar100(self.root, self.download, coarse=False)


class CIFAR20(DataSource):
    """CIFAR-100 with its 20 coarse superclasses as targets ("CIFAR-20").

    ``targets`` are the coarse labels and ``classes`` the 20 superclass names; the 100
    fine labels are kept as ``fine_targets`` with ``fine_classes`` their names, so
    sub-class forgetting (e.g. forget ``rocket`` inside ``vehicles_2``) is possible.

    Args:
        root: Folder that contains ``cifar-100-python``.
        download: If the files are missing, download them with torchvision first.

    Raises:
        FileNotFoundError: From :meth:`load`, if the files are missing and ``download``
            is false.
    """

    def __init__(self, root: str = "data", download: bool = False) -> None:
        self.root = str(root)
        self.download = bool(download)

    def load(self) -> SourceData:
        return _load_cifar100(self.root, self.download, coarse=True)


# --------------------------------------------------------------------------------------
# CIFAR-10 as JPEG bytes (offline file)
# --------------------------------------------------------------------------------------


def _decode_jpeg_bytes(data: bytes) -> np.ndarray:
    """Decode one encoded image to an RGB ``uint8`` array of shape ``(H, W, 3)``."""
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _file_fingerprint(path: Path, chunk: int = 1 << 20) -> str:
    """Size plus a hash of the first and last MiB: cheap and stable across copies."""
    size = path.stat().st_size
    h = hashlib.sha1(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(chunk))
        if size > chunk:
            f.seek(max(size - chunk, chunk))
            h.update(f.read(chunk))
    return f"{size}-{h.hexdigest()[:16]}"


CIFAR10_NPZ_ENV = "NATMU_CIFAR10_NPZ"
DEFAULT_CIFAR10_NPZ = "data/cifar10_jpeg.npz"


class CIFAR10JPEG(DataSource):
    """CIFAR-10 from the offline ``cifar10_jpeg.npz`` file (JPEG bytes, no pickles).

    The file holds ``train_jpeg``/``train_offsets``, ``test_jpeg``/``test_offsets``,
    ``y_train``, ``y_test`` and ``classes``; image ``i`` of a split is
    ``jpeg[offsets[i]:offsets[i + 1]]``. Images are decoded with Pillow once (about
    11 s for all 60,000) and the decoded ``uint8`` arrays are cached as ``.npy`` files
    named by the npz's size and a hash of its first and last MiB, so later loads take
    well under a second. Note that the images are lossy (JPEG quality 75) and sorted
    by class: draw any split from a seeded permutation, never by position.

    Args:
        path: The npz file (relative paths resolve against the working directory); by
            default ``$NATMU_CIFAR10_NPZ`` if set, else ``data/cifar10_jpeg.npz``.
        cache_dir: Folder of the decoded cache; default ``$NATMU_CACHE`` if set, else
            ``~/.cache/natmu-lightning``.

    Raises:
        FileNotFoundError: From :meth:`load`, if ``path`` does not exist.
    """

    def __init__(self, path: Optional[str] = None, cache_dir: Optional[str] = None) -> None:
        self.path = None if path is None else str(path)
        self.cache_dir = cache_dir

    def resolved_path(self) -> Path:
        """``path``, else ``$NATMU_CIFAR10_NPZ``, else ``data/cifar10_jpeg.npz`` (the working
        directory's ``data/`` folder, ignored by git in a checkout of this repository)."""
        return Path(self.path or os.environ.get(CIFAR10_NPZ_ENV) or DEFAULT_CIFAR10_NPZ).expanduser()

    def _cache_folder(self) -> Path:
        return Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir()

    def load(self) -> SourceData:
        path = self.resolved_path()
        if not path.is_file():
            raise FileNotFoundError(
                f"CIFAR-10 JPEG file not found: {path} (resolved: {path.resolve()}); "
                f"set path (--data.source...path) or ${CIFAR10_NPZ_ENV} to the location of cifar10_jpeg.npz"
            )
        stem = f"{path.stem}-{_file_fingerprint(path)}"
        with np.load(path, allow_pickle=False) as z:
            missing = {
                "train_jpeg", "train_offsets", "test_jpeg", "test_offsets",
                "y_train", "y_test", "classes",
            } - set(z.files)  # fmt: skip
            if missing:
                raise ValueError(f"{path} lacks arrays: {sorted(missing)}")
            classes = [str(c) for c in z["classes"].tolist()]
            splits = []
            for split in ("train", "test"):
                labels = np.asarray(z[f"y_{split}"], dtype=np.int64)
                offsets = np.asarray(z[f"{split}_offsets"], dtype=np.int64)
                if offsets.shape != (labels.size + 1,):
                    raise ValueError(
                        f"{path}: {split}_offsets has shape {offsets.shape}, "
                        f"expected ({labels.size + 1},)"
                    )
                cache = self._cache_folder() / f"{stem}-{split}.npy"
                images = self._load_cached(cache, labels.size)
                if images is None:
                    images = self._decode(z[f"{split}_jpeg"], offsets, f"decoding {split}")
                    try:
                        atomic_save_npy(cache, images)
                    except OSError as e:
                        warnings.warn(f"could not write cache {cache}: {e}", stacklevel=2)
                splits.append(ImageSplit(torch.from_numpy(images), torch.from_numpy(labels)))
        return SourceData(splits[0], splits[1], classes)

    @staticmethod
    def _load_cached(cache: Path, n: int) -> Optional[np.ndarray]:
        if not cache.is_file():
            return None
        try:
            images = np.load(cache, allow_pickle=False)
        except (OSError, ValueError) as e:
            warnings.warn(f"ignoring unreadable cache {cache}: {e}", stacklevel=3)
            return None
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[:2] != (n, 3):
            warnings.warn(
                f"ignoring cache {cache} with unexpected {images.dtype}{images.shape}",
                stacklevel=3,
            )
            return None
        return images

    @staticmethod
    def _decode(jpeg: np.ndarray, offsets: np.ndarray, desc: str) -> np.ndarray:
        """Decode every image of a split to a ``(N, 3, H, W)`` uint8 array."""
        n = offsets.size - 1
        out: Optional[np.ndarray] = None
        for i in tqdm(range(n), desc=desc, leave=False, unit="img"):
            arr = _decode_jpeg_bytes(jpeg[offsets[i] : offsets[i + 1]].tobytes())
            if out is None:
                out = np.empty((n, *arr.shape), dtype=np.uint8)
            elif arr.shape != out.shape[1:]:
                raise ValueError(f"image {i} has shape {arr.shape}, expected {out.shape[1:]}")
            out[i] = arr
        if out is None:
            return np.empty((0, 3, 32, 32), dtype=np.uint8)
        return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


# --------------------------------------------------------------------------------------
# Folders of image files
# --------------------------------------------------------------------------------------


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
        image_size: If given, resize every image to ``image_size x image_size``;
            otherwise all images must share one size.
        mode: ``"RGB"`` (3 channels) or ``"L"`` (greyscale, 1 channel).

    Raises:
        ValueError: If ``mode`` or ``image_size`` is invalid; from :meth:`load`, if the
            roots have different class sets, a split has no images, or image sizes
            differ without ``image_size``.
        FileNotFoundError: From :meth:`load`, if a root does not exist.
    """

    def __init__(
        self,
        train_root: str,
        test_root: str,
        image_size: Optional[int] = None,
        mode: str = "RGB",
    ) -> None:
        if image_size is not None and int(image_size) <= 0:
            raise ValueError(f"image_size must be positive, got {image_size}")
        self.train_root = str(train_root)
        self.test_root = str(test_root)
        self.image_size = None if image_size is None else int(image_size)
        self.mode = _check_mode(mode)

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


# --------------------------------------------------------------------------------------
# Arbitrary map-style datasets
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# Subsets
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# Synthetic data
# --------------------------------------------------------------------------------------


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
        ValueError: If a size is not positive or ``classes`` has the wrong length.
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
        classes: Optional[list[str]] = None,
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
            raise ValueError(
                f"classes has {len(classes)} names but num_classes is {num_classes}"
            )
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
