"""Image sets in memory or on disk, and the two ways code reads them.

A dataset's images are either a ``uint8`` tensor ``(N, C, H, W)`` in memory (the fast
default for small sets) or :class:`DiskImages`, which looks like one (``shape``,
``dtype``, ``len``, ``images[index]``) but decodes only the samples it is asked for, in
whichever process asks: a training DataLoader's workers, or the evaluation workers of
:func:`image_batches`. Code that handles images never needs to know which it has, as long
as it goes through these two functions:

- :func:`take` selects samples WITHOUT reading them (a view of an on-disk set, an index
  of a tensor): forget / remaining / test splits, subsets, filtered training sets;
- :func:`image_batches` reads consecutive batches for a model pass (evaluation, the hybrid
  plan, SSD's importances, SalUn's saliency), decoding an on-disk set in worker processes.

Indexing (``images[index]``) reads pixels: inside a DataLoader worker that is exactly the
per-sample decoding a large dataset needs.

>>> images = DiskImages(lambda i: torch.full((1, 2, 2), i, dtype=torch.uint8), (1, 2, 2), 5)
>>> view = take(images, torch.tensor([4, 1]))
>>> view
DiskImages(uint8[2, 1, 2, 2], decoded per sample)
>>> view[1].flatten().tolist(), [batch[:, 0, 0, 0].tolist() for batch in image_batches(images, 2)]
([1, 1, 1, 1], [[0, 1], [2, 3], [4]])
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from natmu_lightning.checks import check_integer

#: Reads sample ``i`` of a dataset as a ``uint8`` ``(C, H, W)`` tensor of the set's fixed size.
SampleReader = Callable[[int], Tensor]


class DiskImages:
    """``uint8`` images ``(N, C, H, W)`` that stay on disk until a sample is read.

    ``images[key]`` (an int, a slice, a list, an int64 or bool tensor) decodes those
    samples in the calling process and returns a tensor; :meth:`subset` returns a view
    without reading anything; :meth:`batches` decodes consecutive batches in
    ``num_workers`` worker processes. Only the sample positions are held in memory.

    Args:
        read: reads the sample at a dataset position (an image file, an item of a user's
            ``Dataset``, a litdata record) as ``uint8`` ``(C, H, W)`` of ``image_shape``,
            resizing or refusing other sizes with an error that names the sample. It is
            pickled to worker processes under the ``spawn`` start method.
        image_shape: ``(C, H, W)`` of every sample.
        length: number of samples of the dataset ``read`` addresses.
        num_workers: worker processes of :meth:`batches` (0 decodes in the caller).
        positions: the dataset positions this view holds (default: all, in order).

    Raises:
        ValueError: a sample read with another shape or dtype (naming its position).
    """

    dtype = torch.uint8
    ndim = 4

    def __init__(
        self,
        read: SampleReader,
        image_shape: Sequence[int],
        length: int,
        num_workers: int = 2,
        positions: Tensor | None = None,
    ) -> None:
        check_integer("num_workers", num_workers, 0)
        self.read, self.image_shape = read, tuple(int(size) for size in image_shape)
        self.num_workers = num_workers
        self.positions = torch.arange(length) if positions is None else positions.long()

    @property
    def shape(self) -> torch.Size:
        return torch.Size((self.positions.numel(), *self.image_shape))

    def __len__(self) -> int:
        return self.positions.numel()

    def __repr__(self) -> str:
        return f"DiskImages(uint8{list(self.shape)}, decoded per sample)"

    def _positions(self, key: Any) -> Tensor:
        if isinstance(key, slice):
            return self.positions[key]
        index = torch.as_tensor(key)
        if index.dtype == torch.bool:
            return self.positions[index]
        return self.positions[index.long()]

    def subset(self, key: Any) -> DiskImages:
        """The samples ``key`` (a slice, a list, an int64 or bool tensor) selects, as a view:
        nothing is read."""
        positions = self._positions(key)
        if positions.ndim == 0:
            raise TypeError("subset takes a slice, a list or a tensor of positions, not one position")
        return DiskImages(self.read, self.image_shape, 0, self.num_workers, positions.reshape(-1))

    def __getitem__(self, key: Any) -> Tensor:
        positions = self._positions(key)
        if positions.ndim == 0:
            return self._read(int(positions))
        images = torch.empty((positions.numel(), *self.image_shape), dtype=torch.uint8)
        for row, position in enumerate(positions.tolist()):
            images[row] = self._read(position)
        return images

    def _read(self, position: int) -> Tensor:
        image = self.read(position)
        if not isinstance(image, Tensor) or image.dtype != torch.uint8 or tuple(image.shape) != self.image_shape:
            found = f"{image.dtype} {tuple(image.shape)}" if isinstance(image, Tensor) else type(image).__name__
            raise ValueError(
                f"sample {position} was read as {found}; every sample of this set must be uint8 {self.image_shape}"
            )
        return image

    def batches(self, batch_size: int, starts: Sequence[int] | None = None) -> Iterator[Tensor]:
        """``self[start : start + batch_size]`` for each start (default: every batch, in order),
        decoded ahead in ``num_workers`` worker processes."""
        starts = list(range(0, len(self), batch_size)) if starts is None else list(starts)
        workers = self.num_workers if len(starts) > 1 else 0
        loader = DataLoader(
            _Slices(self, batch_size, starts),
            batch_size=None,
            num_workers=workers,
            collate_fn=_identity,  # type: ignore[arg-type]
        )
        return iter(loader)


class _Slices(Dataset):
    """Item ``i`` is ``images[starts[i] : starts[i] + batch_size]``."""

    def __init__(self, images: DiskImages, batch_size: int, starts: Sequence[int]) -> None:
        self.images, self.batch_size, self.starts = images, batch_size, starts

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, item: int) -> Tensor:
        start = self.starts[item]
        return self.images[start : start + self.batch_size]


def _identity(batch: Tensor) -> Tensor:
    return batch


#: What a dataset's images may be.
Images = Tensor | DiskImages


def take(images: Images, key: Any) -> Images:
    """The samples ``key`` selects, without reading them (a view of an on-disk set).

    Example:
        >>> take(torch.arange(4).reshape(4, 1, 1, 1).to(torch.uint8), torch.tensor([2])).flatten()
        tensor([2], dtype=torch.uint8)
    """
    return images.subset(key) if isinstance(images, DiskImages) else images[key]


def concat(parts: Sequence[Images]) -> Images:
    """The samples of ``parts`` one after the other: ``torch.cat`` of tensors, or one view of
    on-disk views of the same dataset (nothing is read)."""
    if not any(isinstance(part, DiskImages) for part in parts):
        return torch.cat(list(parts))  # type: ignore[arg-type]
    first = parts[0]
    if not all(isinstance(part, DiskImages) and part.read is first.read for part in parts):  # type: ignore[union-attr]
        raise ValueError("only on-disk views of one dataset can be concatenated")
    positions = torch.cat([part.positions for part in parts])  # type: ignore[union-attr]
    return DiskImages(first.read, first.image_shape, 0, first.num_workers, positions)  # type: ignore[union-attr]


def image_batches(images: Images, batch_size: int, starts: Sequence[int] | None = None) -> Iterator[Tensor]:
    """``images[start : start + batch_size]`` as tensors, for each start (default: every batch
    in order); an on-disk set is decoded in its worker processes."""
    if isinstance(images, DiskImages):
        return images.batches(batch_size, starts)
    starts = range(0, images.shape[0], batch_size) if starts is None else starts
    return (images[start : start + batch_size] for start in starts)
