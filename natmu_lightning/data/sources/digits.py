"""scikit-learn's handwritten digits, shipped in its wheel."""

import math

import numpy as np
import torch

from natmu_lightning.data.sources.base import DataSource, ImageSplit, SourceData


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

    def __init__(
        self, test_fraction: float = 0.3, split_seed: int = 0, noise_std: float = 0.0, noise_seed: int = 0
    ) -> None:
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
