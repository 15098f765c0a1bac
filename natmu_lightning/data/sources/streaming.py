"""Datasets in Lightning's streaming format (``litdata``, an optional extra), read per sample."""

from __future__ import annotations

from natmu_lightning.data.sources.wrappers import MapDataset


class LitData(MapDataset):
    """Two datasets written by ``litdata.optimize``, kept on disk and read sample by sample.

    Each folder (a local one; remote locations that ``litdata.StreamingDataset`` reads are
    untested here: labels are read in the main process before the DataLoader workers fork) is
    opened as a ``litdata.StreamingDataset``, whose ``dataset[i]`` reads one record from its chunk; the
    records are ``{image_key: image, label_key: label}`` mappings or ``(image, label)``
    pairs. Everything else is :class:`MapDataset` with ``on_disk=True``: samples are
    decoded in the DataLoader workers, labels are read once at :meth:`load` (one pass over
    the records, with a progress bar), and every image must have one size unless
    ``image_size`` resizes them. Needs ``pip install "natmu-lightning[litdata]"``.

    Args:
        train_dir: The optimized training set.
        test_dir: The optimized test set.
        classes: Class names (default ``"0"`` .. ``str(max label)``).
        image_size: Resize every image to ``image_size x image_size`` (bilinear).
        num_workers: Worker processes decoding evaluation passes.
        image_key: The image's key in a record.
        label_key: The label's key in a record.

    Raises:
        ImportError: litdata is not installed (with the command that installs it).
    """

    def __init__(
        self,
        train_dir: str,
        test_dir: str,
        classes: list[str] | None = None,
        image_size: int | None = None,
        num_workers: int = 2,
        image_key: str = "image",
        label_key: str = "label",
    ) -> None:
        try:
            from litdata import StreamingDataset
        except ImportError as e:
            raise ImportError(
                'LitData needs the optional litdata package: pip install "natmu-lightning[litdata]"'
            ) from e
        self.train_dir, self.test_dir = str(train_dir), str(test_dir)
        super().__init__(
            StreamingDataset(self.train_dir),
            StreamingDataset(self.test_dir),
            classes,
            on_disk=True,
            image_size=image_size,
            num_workers=num_workers,
            image_key=image_key,
            label_key=label_key,
        )
