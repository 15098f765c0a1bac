"""What happens to a training batch around its copy to the device, in three steps that
``ForgetRemainDataModule``'s transfer hooks call in order:

1. :func:`split_rows`, on the CPU before the copy: which rows to augment, which to mix, and
   the batch's augmentation seed, so that on a GPU the third step never reads the device;
2. :func:`copy_flat_batch`: the copy itself, key by key;
3. :func:`finish_rows`, on the batch's device: the images gathered from the device copy
   (a device-resident stream), remaining rows augmented, hybrid rows mixed.
"""

from __future__ import annotations

from typing import Final, Protocol, cast

import torch
from torch import Tensor

from natmu_lightning.data.resident import ResidentImages
from natmu_lightning.data.streams import Batch
from natmu_lightning.data.transforms import augment_seed, random_crop_flip

#: Keys :func:`split_rows` adds and :func:`finish_rows` removes.
PLAIN_ROWS: Final = "plain_rows"
HYBRID_ROWS: Final = "hybrid_rows"
AUGMENT_SEED: Final = "augment_seed"
TRANSFER_KEYS = (PLAIN_ROWS, HYBRID_ROWS, AUGMENT_SEED)


class RowMixer(Protocol):
    """What turns a batch's hybrid rows into images (NatMU's ``HybridBatches``)."""

    def mix(self, forget_images: Tensor, partners: Tensor, mask_ids: Tensor) -> Tensor:
        """The hybrids of the rows: forgetting images, their partners, their masks' ids."""
        ...


def is_training_batch(batch: object) -> bool:
    """A batch of a training stream (it has rows to augment or mix), not an evaluation batch."""
    return isinstance(batch, dict) and "mask_id" in batch


def split_rows(batch: Batch, seed: int, epoch: int, pin: bool) -> Batch:
    """``batch`` with the rows to augment (``plain_rows``), those to mix (``hybrid_rows``) and
    its augmentation seed; ``pin`` pins the row indices (a pageable host-to-device copy would
    synchronise a CUDA stream)."""
    hybrid = batch["mask_id"].cpu() >= 0
    plain, hybrid_rows = torch.nonzero(~hybrid).flatten(), torch.nonzero(hybrid).flatten()
    if pin:
        plain, hybrid_rows = plain.pin_memory(), hybrid_rows.pin_memory()
    seed_of_batch = augment_seed(seed, epoch, batch["index"].cpu())
    return cast(Batch, {**batch, PLAIN_ROWS: plain, HYBRID_ROWS: hybrid_rows, AUGMENT_SEED: seed_of_batch})


def copy_flat_batch(batch: object, device: torch.device) -> dict | None:
    """A flat dict batch copied key by key (without blocking, except to the CPU or MPS), as
    Lightning's default does but without its generic walk through the collection, which costs
    about half a millisecond of host time per step; ``None`` for any other batch."""
    if not isinstance(batch, dict) or any(isinstance(v, (dict, list, tuple)) for v in batch.values()):
        return None
    non_blocking = device.type not in ("cpu", "mps")
    return {
        key: value.to(device, non_blocking=non_blocking) if isinstance(value, Tensor) else value
        for key, value in batch.items()
    }


def finish_rows(
    batch: Batch,
    resident: ResidentImages | None,
    crop_padding: int,
    horizontal_flip: bool,
    mixer: RowMixer | None,
) -> tuple[Batch, Tensor]:
    """Augment the remaining rows and mix the hybrid rows of a :func:`split_rows` batch on its device.

    Rows are selected by the index tensors prepared on the CPU (no boolean masks, no ``.any()``),
    so nothing here synchronises with an accelerator.

    Returns:
        The batch without the partner and transfer keys, and its uint8 images.

    Raises:
        RuntimeError: a batch of indices only without resident images, or hybrid rows without a mixer.
    """
    plain, hybrid = batch[PLAIN_ROWS], batch[HYBRID_ROWS]
    device_images = _resident_images(batch, resident)  # None on the loader path: the batch holds the images
    images = batch["image"] if device_images is None else device_images[batch["index"]]
    out = images.clone()
    if plain.numel():
        generator = torch.Generator().manual_seed(batch[AUGMENT_SEED])
        out[plain] = random_crop_flip(images[plain], crop_padding, horizontal_flip, generator)
    if hybrid.numel():
        if mixer is None:
            raise RuntimeError("a batch with hybrid rows, but the stream has no hybrids to mix them")
        partners = batch["partner"] if device_images is None else device_images[batch["partner_index"][hybrid]]
        out[hybrid] = mixer.mix(images[hybrid], partners, batch["mask_id"][hybrid])
    dropped = ("partner", "partner_index", *TRANSFER_KEYS)
    return cast(Batch, {key: value for key, value in batch.items() if key not in dropped}), out


def _resident_images(batch: Batch, resident: ResidentImages | None) -> Tensor | None:
    """The device's copy of the training images for a batch of indices (a device-resident
    stream's), or ``None`` for a batch that holds its images (the loader path)."""
    if "image" in batch:
        return None
    if resident is None:
        raise RuntimeError("a batch of indices only, but the training images are not device-resident")
    return resident.on(batch["index"].device)
