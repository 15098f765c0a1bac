"""Turning image files, arrays and tensors into ``uint8`` ``(N, C, H, W)`` tensors."""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

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


def _labels(values: Any) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values, dtype=np.int64))


def _hwc_to_chw(array: np.ndarray) -> torch.Tensor:
    """(N, H, W, C) uint8 numpy array -> contiguous (N, C, H, W) uint8 tensor, with the standard
    strides: for C = 1 the transposed view is already contiguous but keeps channel stride 1,
    which also reads as channels-last and sends convolutions down another kernel (other
    float rounding) than the same pixels gathered elsewhere; ``view`` restrides it."""
    images = torch.from_numpy(np.ascontiguousarray(array.transpose(0, 3, 1, 2)))
    return images.view(images.shape)


def _check_mode(mode: str) -> str:
    if mode not in ("RGB", "L"):
        raise ValueError(f"mode must be 'RGB' or 'L', got {mode!r}")
    return mode


def _decode_image_files(
    paths: Sequence[Path],
    mode: str = "RGB",
    image_size: int | None = None,
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
    out: np.ndarray | None = None
    first: Path | None = None
    for i, path in enumerate(tqdm(paths, desc=desc, leave=False, unit="img")):
        arr = decode_image_file(path, mode, image_size)
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


def decode_image_file(path: str | Path, mode: str, image_size: int | None = None) -> np.ndarray:
    """One image file as a ``uint8`` ``(H, W, C)`` array in ``mode``, resized (bilinear) to
    ``image_size x image_size`` when given and different.

    Raises:
        ValueError: the file cannot be decoded (the message names it).
    """
    try:
        with Image.open(path) as img:
            img = img.convert(mode)
            if image_size is not None and img.size != (int(image_size), int(image_size)):
                img = img.resize((int(image_size), int(image_size)), Image.Resampling.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
    except (OSError, SyntaxError) as e:  # Pillow raises these for broken files
        raise ValueError(f"cannot decode image file {path}: {e}") from e
    return arr[:, :, None] if arr.ndim == 2 else arr


def image_file_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of an image file, from its header (no pixels are decoded).

    Raises:
        ValueError: the file is not an image Pillow can open (the message names it).
    """
    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, SyntaxError) as e:
        raise ValueError(f"cannot read image file {path}: {e}") from e


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
            raise ValueError(f"{where}: tensor images must be CHW or HW, got shape {tuple(image.shape)}")
    else:
        raise ValueError(
            f"{where}: unsupported image type {type(image).__name__} (expected PIL image, numpy array or torch tensor)"
        )
    if image.dtype == torch.uint8:
        return image.contiguous()
    if image.is_floating_point():
        return _float_to_uint8(image, where).contiguous()
    if image.dtype == torch.bool:
        return (image.to(torch.uint8) * 255).contiguous()
    if image.numel() and (int(image.min()) < 0 or int(image.max()) > 255):
        raise ValueError(
            f"{where}: integer images must lie in [0, 255], got values in [{int(image.min())}, {int(image.max())}]"
        )
    return image.to(torch.uint8).contiguous()
