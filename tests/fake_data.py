"""Tiny fake datasets in the real on-disk formats, for tests (no network needed).

Import with ``from tests.fake_data import ...`` (run pytest with ``PYTHONPATH=.``).
"""

import io
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

PathLike = str | Path

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip

#: The 100 fine label names of CIFAR-100 in the order of its ``meta`` file.
CIFAR100_FINE_CLASSES = [
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle",
    "bicycle", "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel",
    "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster",
    "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse",
    "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear",
    "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine",
    "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea",
    "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip",
    "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
]  # fmt: skip

#: The 20 coarse (superclass) names of CIFAR-100 in the order of its ``meta`` file.
CIFAR100_COARSE_CLASSES = [
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects",
    "large_carnivores", "large_man-made_outdoor_things",
    "large_natural_outdoor_scenes", "large_omnivores_and_herbivores",
    "medium_mammals", "non-insect_invertebrates", "people", "reptiles",
    "small_mammals", "trees", "vehicles_1", "vehicles_2",
]  # fmt: skip

#: CIFAR-100 superclass -> its five fine classes (Krizhevsky 2009, table in the paper).
CIFAR100_SUPERCLASSES = {
    "aquatic_mammals": ["beaver", "dolphin", "otter", "seal", "whale"],
    "fish": ["aquarium_fish", "flatfish", "ray", "shark", "trout"],
    "flowers": ["orchid", "poppy", "rose", "sunflower", "tulip"],
    "food_containers": ["bottle", "bowl", "can", "cup", "plate"],
    "fruit_and_vegetables": ["apple", "mushroom", "orange", "pear", "sweet_pepper"],
    "household_electrical_devices": ["clock", "keyboard", "lamp", "telephone", "television"],
    "household_furniture": ["bed", "chair", "couch", "table", "wardrobe"],
    "insects": ["bee", "beetle", "butterfly", "caterpillar", "cockroach"],
    "large_carnivores": ["bear", "leopard", "lion", "tiger", "wolf"],
    "large_man-made_outdoor_things": ["bridge", "castle", "house", "road", "skyscraper"],
    "large_natural_outdoor_scenes": ["cloud", "forest", "mountain", "plain", "sea"],
    "large_omnivores_and_herbivores": ["camel", "cattle", "chimpanzee", "elephant", "kangaroo"],
    "medium_mammals": ["fox", "porcupine", "possum", "raccoon", "skunk"],
    "non-insect_invertebrates": ["crab", "lobster", "snail", "spider", "worm"],
    "people": ["baby", "boy", "girl", "man", "woman"],
    "reptiles": ["crocodile", "dinosaur", "lizard", "snake", "turtle"],
    "small_mammals": ["hamster", "mouse", "rabbit", "shrew", "squirrel"],
    "trees": ["maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"],
    "vehicles_1": ["bicycle", "bus", "motorcycle", "pickup_truck", "train"],
    "vehicles_2": ["lawn_mower", "rocket", "streetcar", "tank", "tractor"],
}

#: ``CIFAR100_FINE_TO_COARSE[fine_label]`` is the coarse label (as in the real pickles).
CIFAR100_FINE_TO_COARSE = [
    CIFAR100_COARSE_CLASSES.index(next(c for c, fines in CIFAR100_SUPERCLASSES.items() if fine in fines))
    for fine in CIFAR100_FINE_CLASSES
]


def _dump(path: Path, obj: object) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _cifar_batch(rng: np.random.Generator, labels: dict[bytes, np.ndarray], name: str) -> dict:
    n = len(next(iter(labels.values())))
    entry = {
        b"batch_label": name.encode(),
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        b"filenames": [f"fake_{name}_{i}.png".encode() for i in range(n)],
    }
    entry.update({k: [int(v) for v in vals] for k, vals in labels.items()})
    return entry


def make_fake_cifar10(root: PathLike, train_per_class: int = 2, test_per_class: int = 1, seed: int = 0) -> Path:
    """Write a tiny CIFAR-10 in torchvision's layout: ``root/cifar-10-batches-py``.

    Keys and names are ``bytes``, as the real pickles read with ``encoding="bytes"``.
    The train images are spread over the five ``data_batch_*`` files.

    Returns:
        ``root`` (pass it as ``CIFAR10(root=...)``).
    """
    root = Path(root)
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    train_labels = rng.permutation(np.repeat(np.arange(10), train_per_class))
    for i, chunk in enumerate(np.array_split(train_labels, 5), start=1):
        _dump(base / f"data_batch_{i}", _cifar_batch(rng, {b"labels": chunk}, f"batch {i}"))
    test_labels = rng.permutation(np.repeat(np.arange(10), test_per_class))
    _dump(base / "test_batch", _cifar_batch(rng, {b"labels": test_labels}, "test"))
    _dump(
        base / "batches.meta",
        {
            b"label_names": [c.encode() for c in CIFAR10_CLASSES],
            b"num_cases_per_batch": 10000,
            b"num_vis": 3072,
        },
    )
    return root


def make_fake_cifar100(
    root: PathLike, train_per_fine_class: int = 1, test_per_fine_class: int = 1, seed: int = 0
) -> Path:
    """Write a tiny CIFAR-100 in torchvision's layout: ``root/cifar-100-python``.

    Uses the real fine/coarse names and the real fine->coarse mapping.

    Returns:
        ``root`` (pass it as ``CIFAR100(root=...)`` or ``CIFAR20(root=...)``).
    """
    root = Path(root)
    base = root / "cifar-100-python"
    base.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    mapping = np.asarray(CIFAR100_FINE_TO_COARSE)
    for name, per in (("train", train_per_fine_class), ("test", test_per_fine_class)):
        fine = rng.permutation(np.repeat(np.arange(100), per))
        labels = {b"fine_labels": fine, b"coarse_labels": mapping[fine]}
        _dump(base / name, _cifar_batch(rng, labels, name))
    _dump(
        base / "meta",
        {
            b"fine_label_names": [c.encode() for c in CIFAR100_FINE_CLASSES],
            b"coarse_label_names": [c.encode() for c in CIFAR100_COARSE_CLASSES],
        },
    )
    return root


def _random_image(rng: np.random.Generator, size: int, mode: str = "RGB") -> Image.Image:
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    return Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8), mode=mode)


def make_fake_tiny_imagenet(
    root: PathLike, num_classes: int = 200, train_per_class: int = 1, val_per_class: int = 1
) -> Path:
    """Write a tiny Tiny-ImageNet (64x64 JPEGs) in the standard layout.

    ``wnids.txt`` is written in reverse order (the loader sorts wnids); every 50th
    class has no ``words.txt`` entry (the loader falls back to the wnid), and the first
    training image is greyscale (the loader converts to RGB).

    Returns:
        ``root/tiny-imagenet-200`` (pass it as ``TinyImageNet(root=...)``).
    """
    base = Path(root) / "tiny-imagenet-200"
    rng = np.random.default_rng(0)
    wnids = [f"n{i:08d}" for i in range(num_classes)]
    base.mkdir(parents=True, exist_ok=True)
    (base / "wnids.txt").write_text("".join(w + "\n" for w in reversed(wnids)))
    words = ["n99999999\tunused, thing\n"]
    words += [f"{w}\tthing{i}, alias{i}\n" for i, w in enumerate(wnids) if i % 50 != 0]
    (base / "words.txt").write_text("".join(words))
    for i, w in enumerate(wnids):
        folder = base / "train" / w / "images"
        folder.mkdir(parents=True, exist_ok=True)
        boxes = []
        for j in range(train_per_class):
            mode = "L" if i == 0 and j == 0 else "RGB"
            _random_image(rng, 64, mode).save(folder / f"{w}_{j}.JPEG", quality=75)
            boxes.append(f"{w}_{j}.JPEG\t0\t0\t63\t63\n")
        (base / "train" / w / f"{w}_boxes.txt").write_text("".join(boxes))
    val_images = base / "val" / "images"
    val_images.mkdir(parents=True, exist_ok=True)
    lines = []
    k = 0
    for _ in range(val_per_class):
        for w in wnids:
            _random_image(rng, 64).save(val_images / f"val_{k}.JPEG", quality=75)
            lines.append(f"val_{k}.JPEG\t{w}\t0\t0\t63\t63\n")
            k += 1
    (base / "val" / "val_annotations.txt").write_text("".join(lines))
    return base


def _jpeg_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image, mode="RGB").save(buf, format="JPEG", quality=75)
    return buf.getvalue()


def make_fake_cifar10_npz(path: PathLike, train_per_class: int = 3, test_per_class: int = 2) -> Path:
    """Write a tiny file in the format of ``cifar10_jpeg.npz`` (real JPEG bytes).

    Like the real file, images are sorted by class.

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays: dict[str, Any] = {"classes": np.asarray(CIFAR10_CLASSES)}  # Any: savez's keywords are typed apart
    for split, per in (("train", train_per_class), ("test", test_per_class)):
        labels = np.repeat(np.arange(10, dtype=np.uint8), per)
        blobs = [_jpeg_bytes(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in labels]
        offsets = np.zeros(len(blobs) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(b) for b in blobs])
        arrays[f"{split}_jpeg"] = np.frombuffer(b"".join(blobs), dtype=np.uint8)
        arrays[f"{split}_offsets"] = offsets
        arrays[f"y_{split}"] = labels
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def make_fake_image_folder(
    root: PathLike, classes: Sequence[str] = ("a", "b"), per_class: int = 2, size: int = 16
) -> Path:
    """Write ``root/train/<class>/*.png`` and ``root/test/<class>/*.png`` (RGB).

    Returns:
        ``root`` (use ``root / "train"`` and ``root / "test"`` as the two roots).
    """
    root = Path(root)
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in classes:
            folder = root / split / c
            folder.mkdir(parents=True, exist_ok=True)
            for j in range(per_class):
                _random_image(rng, size).save(folder / f"{j}.png")
    return root
