"""Training images kept on the accelerator: each batch is indexed, mixed and augmented there.

On the loader path a DataLoader gathers every batch's uint8 images on the host (in workers
when asked), pins them and copies them to the device. A device-resident training set is
copied to the device once; the loader then yields only the batch's indices (which rows,
their partners, masks and labels: a few hundred bytes), and
``ForgetRemainDataModule.on_after_batch_transfer`` gathers the pixels from the device copy
before mixing and augmenting them. The rows, their order and the augmentation draws are the
loader path's, so the two give the same batches.
"""

from __future__ import annotations

import torch
from torch import Tensor

from natmu_lightning.images import Images

RESIDENT_MEMORY_FRACTION = 0.25
"""By default the training set goes to a CUDA device when its uint8 images take at most this
fraction of the device's free memory (CIFAR-10's 50,000 images take 146.5 MiB)."""


def use_device_resident(
    requested: bool | None, images: Images, on_cuda: bool, fraction: float = RESIDENT_MEMORY_FRACTION
) -> bool:
    """Whether to keep ``images`` on the device: ``requested`` when given, else on CUDA when they fit.

    On a CPU "resident" is the in-memory tensor itself (no copy): only an explicit ``True``
    turns it on there, for tests and for comparing the two paths.

    Raises:
        ValueError: ``requested`` is True but the images stay on disk, or do not fit in
            ``fraction`` of the CUDA device's free memory.
    """
    if requested is False:
        return False
    if not isinstance(images, Tensor):
        if requested:
            raise ValueError(
                "device_resident=True needs the training images in memory, but this source keeps them on disk "
                "(on_disk=True): load them in memory, or set device_resident to false"
            )
        return False
    if not on_cuda:
        return bool(requested)
    free, _ = torch.cuda.mem_get_info()  # the current device: Lightning sets it before any setup hook
    fits = images.nbytes <= fraction * free
    if requested and not fits:
        raise ValueError(
            f"device_resident=True: the training images take {images.nbytes / 2**20:.0f} MiB, more than "
            f"{fraction:g} of the GPU's free memory ({free / 2**20:.0f} MiB); set device_resident to false "
            "(batches then come through the DataLoader) or raise resident_memory_fraction"
        )
    return fits


class ResidentImages:
    """The training images, copied to a device the first time a batch arrives there."""

    def __init__(self, images: Tensor) -> None:
        self.images = images
        self._copies: dict[str, Tensor] = {}

    def on(self, device: torch.device) -> Tensor:
        key = str(device)
        if key not in self._copies:
            self._copies[key] = self.images.to(device)  # on the CPU: the tensor itself
        return self._copies[key]
