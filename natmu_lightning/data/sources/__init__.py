"""Image datasets, in memory or on disk.

Every dataset in ``natmu_lightning`` is loaded through a :class:`DataSource`, as ``uint8``
tensors in memory (the default: fast for sets that fit) or, for ``ImageFolder(on_disk=True)``,
``MapDataset(on_disk=True)`` and :class:`LitData`, as
:class:`~natmu_lightning.images.DiskImages` that decode each sample when a batch needs
it, in DataLoader workers. The rest of the package (forget requests, the datamodule,
hybrid methods) only ever sees the resulting :class:`SourceData`, so a new dataset only
needs a new :class:`DataSource` subclass.

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

from natmu_lightning.data.sources.base import DataSource, ImageSplit, SourceData, default_cache_dir
from natmu_lightning.data.sources.cifar import CIFAR10, CIFAR20, CIFAR100
from natmu_lightning.data.sources.cifar_jpeg import CIFAR10JPEG
from natmu_lightning.data.sources.digits import Digits
from natmu_lightning.data.sources.folders import ImageFolder, TinyImageNet
from natmu_lightning.data.sources.streaming import LitData
from natmu_lightning.data.sources.synthetic import SyntheticImages
from natmu_lightning.data.sources.wrappers import ClassBalancedSubset, MapDataset

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
    "LitData",
    "SyntheticImages",
    "ClassBalancedSubset",
    "default_cache_dir",
]
