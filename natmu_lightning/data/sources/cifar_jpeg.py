"""CIFAR-10 from the offline ``cifar10_jpeg.npz`` file (JPEG bytes, no pickles)."""

import hashlib
import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from natmu_lightning.data.sources.base import DataSource, ImageSplit, SourceData, default_cache_dir
from natmu_lightning.io import atomic_save_npy


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

    def __init__(self, path: str | None = None, cache_dir: str | None = None) -> None:
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
                        f"{path}: {split}_offsets has shape {offsets.shape}, expected ({labels.size + 1},)"
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
    def _load_cached(cache: Path, n: int) -> np.ndarray | None:
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
        out: np.ndarray | None = None
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
