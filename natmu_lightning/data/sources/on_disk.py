"""Reading one sample at a time: image files and items of any map-style dataset, for
:class:`~natmu_lightning.images.DiskImages` (datasets that stay on disk).

A reader is called in DataLoader worker processes: it holds only what locates the samples
(file names packed in one numpy bytes array, or the user's dataset object), so forked
workers share it instead of copying Python objects page by page.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from natmu_lightning.data.sources.decoding import _check_mode, _to_uint8_chw, decode_image_file, image_file_size


class ImageFileReader:
    """Sample ``i`` is image file ``paths[i]``, decoded to ``uint8`` ``(C, H, W)``.

    Args:
        paths: the image files.
        mode: ``"RGB"`` or ``"L"``.
        image_size: resize every image to ``image_size x image_size`` (bilinear); ``None``
            keeps the files' size, which must then be the same for all of them.
    """

    def __init__(self, paths: Sequence[Path], mode: str = "RGB", image_size: int | None = None) -> None:
        self.mode, self.image_size = _check_mode(mode), image_size
        self.paths = np.array([os.fsencode(path) for path in paths])

    def __len__(self) -> int:
        return len(self.paths)

    def path(self, i: int) -> str:
        return os.fsdecode(self.paths[i])

    def __call__(self, i: int) -> Tensor:
        return torch.from_numpy(decode_image_file(self.path(i), self.mode, self.image_size).transpose(2, 0, 1).copy())

    def image_shape(self, desc: str) -> tuple[int, int, int]:
        """``(C, H, W)`` of every sample, after reading every file's header (no pixels are
        decoded), so that an unreadable file or, without ``image_size``, a file of another
        size is refused now, naming the file, instead of in a worker mid-training."""
        if len(self) == 0:
            raise ValueError(f"{desc}: no image files")
        channels = 3 if self.mode == "RGB" else 1
        first = image_file_size(self.path(0))
        for i in tqdm(range(1, len(self)), desc=f"checking {desc}", leave=False, unit="img"):
            size = image_file_size(self.path(i))
            if self.image_size is None and size != first:
                raise ValueError(
                    f"image {self.path(i)} has size {size[0]}x{size[1]} (WxH) but {self.path(0)} has "
                    f"{first[0]}x{first[1]}; pass image_size to resize all images"
                )
        if self.image_size is not None:
            return channels, self.image_size, self.image_size
        return channels, first[1], first[0]


def item_parts(item: Any, where: str, image_key: str = "image", label_key: str = "label") -> tuple[Any, Any]:
    """``(image, label)`` of a dataset item: an ``(image, label, ...)`` sequence, or a mapping
    with ``image_key`` and ``label_key`` (as litdata and webdataset-style records store them)."""
    if isinstance(item, Mapping):
        missing = [key for key in (image_key, label_key) if key not in item]
        if missing:
            raise ValueError(
                f"{where} is a mapping without {missing} (it has {sorted(item)}); set image_key / label_key"
            )
        return item[image_key], item[label_key]
    try:
        return item[0], item[1]
    except (TypeError, IndexError, KeyError) as e:
        raise ValueError(f"{where} is not an (image, label) pair") from e


def resized(image: Tensor, image_size: int | None, where: str) -> Tensor:
    """A ``uint8`` ``(C, H, W)`` image resized (bilinear, through Pillow as for files) to
    ``image_size x image_size`` when given and different."""
    if image_size is None or tuple(image.shape[1:]) == (image_size, image_size):
        return image
    if image.shape[0] not in (1, 3):
        raise ValueError(f"{where}: only 1- or 3-channel images can be resized, got {tuple(image.shape)}")
    pil = Image.fromarray(image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy())
    array = np.asarray(pil.resize((image_size, image_size), Image.Resampling.BILINEAR), dtype=np.uint8)
    return torch.from_numpy(array[:, :, None] if array.ndim == 2 else array.copy()).permute(2, 0, 1).contiguous()


class DatasetItemReader:
    """Sample ``i`` is the image of ``dataset[i]`` as ``uint8`` ``(C, H, W)`` (PIL images, numpy
    and tensor images as :class:`~natmu_lightning.data.sources.MapDataset` takes them).

    Args:
        dataset: any map-style dataset (a torchvision dataset, a user's own, a
            ``litdata.StreamingDataset``).
        name: the split's name, for errors (``"train[17]"``).
        image_size: resize to ``image_size x image_size``; ``None`` refuses a sample whose
            shape differs from ``dataset[0]``'s.
        image_key: an item's image key when items are mappings.
        label_key: an item's label key when items are mappings.
    """

    def __init__(
        self,
        dataset: Dataset,
        name: str,
        image_size: int | None = None,
        image_key: str = "image",
        label_key: str = "label",
    ) -> None:
        self.dataset, self.name, self.image_size = dataset, name, image_size
        self.image_key, self.label_key = image_key, label_key
        self.shape: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def parts(self, i: int) -> tuple[Tensor, Any]:
        where = f"{self.name}[{i}]"
        image, label = item_parts(self.dataset[i], where, self.image_key, self.label_key)
        return resized(_to_uint8_chw(image, where), self.image_size, where), label

    def __call__(self, i: int) -> Tensor:
        return self.checked(i, self.parts(i)[0])

    def checked(self, i: int, image: Tensor) -> Tensor:
        """``image`` (sample ``i``), once it has ``dataset[0]``'s shape (when :attr:`shape` is set)."""
        if self.shape is not None and tuple(image.shape) != self.shape:
            raise ValueError(
                f"{self.name}[{i}] has image shape {tuple(image.shape)} but {self.name}[0] has {self.shape}; "
                "all images must share one shape (pass image_size to resize them)"
            )
        return image

    def labels(self) -> Tensor:
        """Every sample's label: the dataset's ``targets`` when it has one per sample (torchvision
        datasets do), else read item by item (each image is decoded once; a progress bar shows it).
        Also fixes the shape every sample must have (``dataset[0]``'s, after resizing)."""
        if len(self) == 0:
            raise ValueError(f"{self.name} dataset is empty")
        first, first_label = self.parts(0)
        self.shape = tuple(first.shape)
        given = getattr(self.dataset, "targets", None)
        if given is not None and len(given) == len(self):
            return torch.as_tensor(np.asarray(given, dtype=np.int64))
        labels = [int(first_label)]
        for i in tqdm(range(1, len(self)), desc=f"reading {self.name} labels", leave=False, unit="img"):
            image, label = self.parts(i)
            self.checked(i, image)  # decoded anyway: refuse another size now, not mid-training
            labels.append(int(label))
        return torch.as_tensor(labels, dtype=torch.int64)
