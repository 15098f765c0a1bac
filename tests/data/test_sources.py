"""Tests for natmu_lightning.data.sources (all on small fake data, no network)."""

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from natmu_lightning.data.sources import (
    CIFAR10,
    CIFAR10JPEG,
    CIFAR20,
    CIFAR100,
    ClassBalancedSubset,
    DataSource,
    Digits,
    ImageFolder,
    ImageSplit,
    MapDataset,
    SourceData,
    SyntheticImages,
    TinyImageNet,
    cifar_jpeg,
)
from tests.fake_data import (
    CIFAR10_CLASSES,
    CIFAR100_COARSE_CLASSES,
    CIFAR100_FINE_CLASSES,
    CIFAR100_FINE_TO_COARSE,
    make_fake_cifar10,
    make_fake_cifar10_npz,
    make_fake_cifar100,
    make_fake_image_folder,
    make_fake_tiny_imagenet,
)

REAL_NPZ = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "cifar10_jpeg.npz"


def check_source_data(data: SourceData, num_classes: int, image_shape: tuple) -> None:
    """Invariants every source must satisfy."""
    assert isinstance(data, SourceData)
    assert data.num_classes == num_classes == len(data.classes)
    assert data.image_shape == image_shape
    for split in (data.train, data.test):
        assert split.images.dtype == torch.uint8
        assert split.images.is_contiguous()
        assert split.images.shape[1:] == image_shape
        assert split.targets.dtype == torch.int64
        assert split.targets.shape == (split.images.shape[0],)
        if len(split):
            assert 0 <= int(split.targets.min()) and int(split.targets.max()) < num_classes


def assert_same(a: SourceData, b: SourceData) -> None:
    assert a.classes == b.classes and a.fine_classes == b.fine_classes
    for sa, sb in ((a.train, b.train), (a.test, b.test)):
        assert torch.equal(sa.images, sb.images)
        assert torch.equal(sa.targets, sb.targets)
        assert (sa.fine_targets is None) == (sb.fine_targets is None)
        if sa.fine_targets is not None:
            assert torch.equal(sa.fine_targets, sb.fine_targets)


# --------------------------------------------------------------------------------------
# Containers
# --------------------------------------------------------------------------------------


def _split(n=4, c=3, h=2, w=2, labels=None, fine=None):
    images = torch.zeros((n, c, h, w), dtype=torch.uint8)
    targets = torch.zeros(n, dtype=torch.int64) if labels is None else labels
    return ImageSplit(images, targets, fine)


def test_image_split_validation():
    with pytest.raises(ValueError, match="uint8"):
        ImageSplit(torch.zeros((2, 3, 4, 4)), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        ImageSplit(torch.zeros((2, 4, 4), dtype=torch.uint8), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="int64"):
        ImageSplit(torch.zeros((2, 3, 4, 4), dtype=torch.uint8), torch.zeros(2, dtype=torch.int32))
    with pytest.raises(ValueError, match="targets"):
        ImageSplit(torch.zeros((2, 3, 4, 4), dtype=torch.uint8), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="fine_targets"):
        _split(fine=torch.zeros(3, dtype=torch.int64))
    # Non-contiguous input is made contiguous.
    nhwc = torch.zeros((2, 4, 4, 3), dtype=torch.uint8).permute(0, 3, 1, 2)
    split = ImageSplit(nhwc, torch.zeros(2, dtype=torch.int64))
    assert split.images.is_contiguous() and len(split) == 2
    assert "uint8[2, 3, 4, 4]" in repr(split)


def test_source_data_validation():
    data = SourceData(_split(), _split(n=2), ["x", "y"])
    assert data.num_classes == 2 and data.image_shape == (3, 2, 2)
    assert data.num_fine_classes is None
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        SourceData(_split(labels=torch.tensor([0, 1, 2, 0])), _split(), ["x", "y"])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        SourceData(_split(), _split(labels=torch.tensor([0, -1, 0, 0])), ["x", "y"])
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        SourceData(_split(), _split(h=3), ["x", "y"])
    with pytest.raises(ValueError, match="unique"):
        SourceData(_split(), _split(), ["x", "x"])
    with pytest.raises(ValueError, match="empty"):
        SourceData(_split(), _split(), [])
    fine = torch.tensor([0, 1, 2, 3])
    with pytest.raises(ValueError, match="fine_classes"):
        SourceData(_split(fine=fine), _split(fine=fine), ["x"])
    with pytest.raises(ValueError, match="both splits"):
        SourceData(_split(fine=fine), _split(), ["x"], fine_classes=list("abcd"))
    with pytest.raises(ValueError, match=r"fine_targets must lie in \[0, 2\]"):
        SourceData(_split(fine=fine), _split(fine=fine), ["x"], fine_classes=list("abc"))
    ok = SourceData(_split(fine=fine), _split(fine=fine), ["x"], fine_classes=list("abcd"))
    assert ok.num_fine_classes == 4


def test_data_source_is_abstract():
    with pytest.raises(TypeError):
        DataSource()  # type: ignore[abstract]


# --------------------------------------------------------------------------------------
# Digits
# --------------------------------------------------------------------------------------


def test_digits():
    data = Digits().load()
    check_source_data(data, 10, (1, 8, 8))
    assert data.classes == [str(i) for i in range(10)]
    assert len(data.train) + len(data.test) == 1797
    assert len(data.test) == int(np.ceil(0.3 * 1797))
    # Stratified: every class in both splits in about the same proportion.
    tr = torch.bincount(data.train.targets, minlength=10).float()
    te = torch.bincount(data.test.targets, minlength=10).float()
    assert torch.all(te > 0) and torch.allclose(te / (tr + te), torch.full((10,), 0.3), atol=0.02)
    allowed = {int(round(v * 255 / 16)) for v in range(17)}
    assert set(torch.unique(data.train.images).tolist()) <= allowed
    assert int(data.train.images.max()) == 255


def test_digits_pixels_match_sklearn():
    from sklearn.datasets import load_digits

    digits = load_digits()
    data = Digits(test_fraction=0.5, split_seed=3).load()
    pixels = torch.cat([data.train.images, data.test.images]).reshape(-1, 64)
    targets = torch.cat([data.train.targets, data.test.targets])
    expected = np.rint(digits.data * 255 / 16).astype(np.uint8)
    # The two splits together are a permutation of the whole set.
    got = sorted(zip(map(bytes, pixels.numpy()), targets.tolist()))
    want = sorted(zip(map(bytes, expected), digits.target.tolist()))
    assert got == want


def test_digits_seed_changes_split():
    a, b = Digits(split_seed=0).load(), Digits(split_seed=1).load()
    assert not torch.equal(a.test.images, b.test.images)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_digits_bad_fraction(fraction):
    with pytest.raises(ValueError, match="test_fraction"):
        Digits(test_fraction=fraction)


def test_digits_noise_is_fixed_per_image_and_seeded():
    clean = Digits().load()
    noisy = Digits(noise_std=0.25).load()
    assert torch.equal(noisy.train.targets, clean.train.targets)  # same split, same labels
    assert torch.equal(Digits(noise_std=0.25).load().train.images, noisy.train.images)
    assert not torch.equal(Digits(noise_std=0.25, noise_seed=1).load().train.images, noisy.train.images)
    # Each image's noise is drawn before the split, so it does not depend on the split seed.
    other_split = Digits(noise_std=0.25, split_seed=1).load()

    def images(data):
        return set(map(bytes, torch.cat([data.train.images, data.test.images]).numpy()))

    assert images(other_split) == images(noisy)
    # Additive and clipped to the pixel range: on mid-grey clean pixels, where clipping is
    # rare, the residual std is close to 0.25 * 255 (0.234 * 255 measured).
    residual = noisy.train.images.double() - clean.train.images.double()
    mid = (clean.train.images > 64) & (clean.train.images < 191)
    assert abs(residual[mid].std().item() - 0.25 * 255) < 0.05 * 255


@pytest.mark.parametrize("std", [-0.1, float("nan"), float("inf")])
def test_digits_bad_noise(std):
    with pytest.raises(ValueError, match="noise_std"):
        Digits(noise_std=std)


# --------------------------------------------------------------------------------------
# CIFAR pickles
# --------------------------------------------------------------------------------------


def test_cifar10(tmp_path):
    root = make_fake_cifar10(tmp_path, train_per_class=2, test_per_class=1)
    data = CIFAR10(root=str(root)).load()
    check_source_data(data, 10, (3, 32, 32))
    assert data.classes == CIFAR10_CLASSES
    assert len(data.train) == 20 and len(data.test) == 10
    assert torch.bincount(data.train.targets).tolist() == [2] * 10
    assert torch.bincount(data.test.targets).tolist() == [1] * 10
    assert data.train.fine_targets is None and data.fine_classes is None
    # Pixels follow the CIFAR row layout (3072 = R plane, G plane, B plane).
    with open(root / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    first = np.asarray(batch[b"data"][0]).reshape(3, 32, 32)
    assert torch.equal(data.train.images[0], torch.from_numpy(first))
    assert data.train.targets[0] == batch[b"labels"][0]


def test_cifar_str_keys(tmp_path):
    """Pickles with str keys (as the real files read with latin1) are read too."""
    root = make_fake_cifar10(tmp_path)
    base = root / "cifar-10-batches-py"
    for path in base.iterdir():
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="bytes")
        entry = {k.decode(): ([v.decode() for v in val] if k == b"label_names" else val) for k, val in entry.items()}
        with open(path, "wb") as f:
            pickle.dump(entry, f)
    assert CIFAR10(root=str(root)).load().classes == CIFAR10_CLASSES


def test_cifar100(tmp_path):
    root = make_fake_cifar100(tmp_path, train_per_fine_class=2, test_per_fine_class=1)
    data = CIFAR100(root=str(root)).load()
    check_source_data(data, 100, (3, 32, 32))
    assert data.classes == CIFAR100_FINE_CLASSES
    assert len(data.train) == 200 and len(data.test) == 100
    assert data.train.fine_targets is None and data.fine_classes is None


def test_cifar100_reference_lists():
    """The hard-coded CIFAR-100 lists in fake_data match the real meta file."""
    assert len(CIFAR100_FINE_CLASSES) == len(set(CIFAR100_FINE_CLASSES)) == 100
    assert len(CIFAR100_COARSE_CLASSES) == 20
    assert CIFAR100_FINE_CLASSES == sorted(CIFAR100_FINE_CLASSES)
    # The widely published fine->coarse table of the real pickles.
    assert CIFAR100_FINE_TO_COARSE == [
        4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
        6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
        5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
        10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
        16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
    ]  # fmt: skip
    assert CIFAR100_FINE_CLASSES.index("rocket") == 69
    assert CIFAR100_COARSE_CLASSES.index("vehicles_2") == 19


def test_cifar20(tmp_path):
    root = make_fake_cifar100(tmp_path, train_per_fine_class=2, test_per_fine_class=1)
    data = CIFAR20(root=str(root)).load()
    check_source_data(data, 20, (3, 32, 32))
    assert data.classes == CIFAR100_COARSE_CLASSES
    assert data.fine_classes == CIFAR100_FINE_CLASSES
    assert data.num_fine_classes == 100
    mapping = torch.tensor(CIFAR100_FINE_TO_COARSE)
    for split in (data.train, data.test):
        assert split.fine_targets is not None and split.fine_targets.dtype == torch.int64
        assert torch.equal(mapping[split.fine_targets], split.targets)
        assert torch.bincount(split.targets, minlength=20).min() > 0
    rocket = data.fine_classes.index("rocket")
    assert rocket == 69
    is_rocket = data.train.fine_targets == rocket
    assert int(is_rocket.sum()) == 2
    assert {data.classes[t] for t in data.train.targets[is_rocket].tolist()} == {"vehicles_2"}
    # Same images as CIFAR-100; its targets are CIFAR-20's fine targets.
    c100 = CIFAR100(root=str(root)).load()
    assert torch.equal(c100.train.images, data.train.images)
    assert torch.equal(c100.train.targets, data.train.fine_targets)
    assert torch.equal(c100.test.targets, data.test.fine_targets)


def test_class_balanced_subset(tmp_path):
    full = SyntheticImages(num_classes=4, train_per_class=12, test_per_class=5, seed=3)
    whole = full.load()
    subset = ClassBalancedSubset(full, train_per_class=7, test_per_class=2, seed=1)
    data = subset.load()
    assert data.classes == whole.classes
    assert torch.bincount(data.train.targets).tolist() == [7] * 4
    assert torch.bincount(data.test.targets).tolist() == [2] * 4
    # Every kept image is one of the full split's, kept with its label and in the full split's order.
    position = {bytes(img.numpy()): i for i, img in enumerate(whole.train.images)}
    kept = [position[bytes(img.numpy())] for img in data.train.images]
    assert kept == sorted(kept)
    assert torch.equal(whole.train.targets[kept], data.train.targets)
    # Deterministic in the seed, different across seeds.
    assert torch.equal(subset.load().train.images, data.train.images)
    other = ClassBalancedSubset(full, train_per_class=7, test_per_class=2, seed=2).load()
    assert not torch.equal(other.train.images, data.train.images)


def test_class_balanced_subset_keeps_fine_labels(tmp_path):
    root = make_fake_cifar100(tmp_path, train_per_fine_class=2, test_per_fine_class=1)
    data = ClassBalancedSubset(CIFAR20(root=str(root)), train_per_class=4, test_per_class=5).load()
    assert data.fine_classes == CIFAR100_FINE_CLASSES
    mapping = torch.tensor(CIFAR100_FINE_TO_COARSE)
    assert torch.equal(mapping[data.train.fine_targets], data.train.targets)


def test_class_balanced_subset_errors():
    full = SyntheticImages(num_classes=3, train_per_class=4, test_per_class=2)
    with pytest.raises(ValueError, match="train_per_class must be >= 1"):
        ClassBalancedSubset(full, train_per_class=0, test_per_class=1)
    with pytest.raises(ValueError, match="test split has 2 samples of class 0 .* but 3 per class"):
        ClassBalancedSubset(full, train_per_class=4, test_per_class=3).load()


@pytest.mark.parametrize(
    "cls, folder", [(CIFAR10, "cifar-10-batches-py"), (CIFAR100, "cifar-100-python"), (CIFAR20, "cifar-100-python")]
)
def test_cifar_missing(tmp_path, cls, folder):
    with pytest.raises(FileNotFoundError, match="download=True") as info:
        cls(root=str(tmp_path / "nowhere")).load()
    assert folder in str(info.value)


def test_cifar10_missing_one_file(tmp_path):
    root = make_fake_cifar10(tmp_path)
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        CIFAR10(root=str(root)).load()


def test_cifar_download_uses_torchvision(tmp_path, monkeypatch):
    """download=True fetches through torchvision only when the files are missing."""
    import torchvision.datasets

    calls = []

    def fake_download(root, train=True, download=False, **kwargs):
        calls.append((root, train, download))
        make_fake_cifar10(root)

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", fake_download)
    data = CIFAR10(root=str(tmp_path), download=True).load()
    assert len(calls) == 1 and calls[0][2] is True
    assert len(data.train) == 20
    CIFAR10(root=str(tmp_path), download=True).load()  # files present: no new download
    assert len(calls) == 1


# --------------------------------------------------------------------------------------
# CIFAR-10 JPEG file
# --------------------------------------------------------------------------------------


def _decode_reference(npz: Path, split: str) -> torch.Tensor:
    with np.load(npz) as z:
        jpeg, off = z[f"{split}_jpeg"], z[f"{split}_offsets"]
        arrays = [
            np.asarray(Image.open(io.BytesIO(jpeg[off[i] : off[i + 1]].tobytes())).convert("RGB"))
            for i in range(len(off) - 1)
        ]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)


def test_cifar10_jpeg(tmp_path):
    npz = make_fake_cifar10_npz(tmp_path / "c.npz", train_per_class=3, test_per_class=2)
    data = CIFAR10JPEG(path=str(npz), cache_dir=str(tmp_path / "cache")).load()
    check_source_data(data, 10, (3, 32, 32))
    assert data.classes == CIFAR10_CLASSES
    assert len(data.train) == 30 and len(data.test) == 20
    assert data.train.targets.tolist() == np.repeat(np.arange(10), 3).tolist()
    assert torch.equal(data.train.images, _decode_reference(npz, "train"))
    assert torch.equal(data.test.images, _decode_reference(npz, "test"))


def test_cifar10_jpeg_default_path_is_the_environment_then_the_repository_data_folder(tmp_path, monkeypatch):
    npz = make_fake_cifar10_npz(tmp_path / "elsewhere.npz", train_per_class=3, test_per_class=2)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NATMU_CIFAR10_NPZ", str(npz))
    assert len(CIFAR10JPEG(cache_dir=str(tmp_path / "cache")).load().train) == 30
    monkeypatch.delenv("NATMU_CIFAR10_NPZ")
    with pytest.raises(FileNotFoundError, match=r"data/cifar10_jpeg\.npz .*NATMU_CIFAR10_NPZ"):
        CIFAR10JPEG(cache_dir=str(tmp_path / "cache")).load()
    (tmp_path / "data").mkdir()
    make_fake_cifar10_npz(tmp_path / "data" / "cifar10_jpeg.npz", train_per_class=2, test_per_class=1)
    assert len(CIFAR10JPEG(cache_dir=str(tmp_path / "cache")).load().train) == 20


def test_cifar10_jpeg_cache_reused(tmp_path, monkeypatch):
    npz = make_fake_cifar10_npz(tmp_path / "c.npz")
    cache = tmp_path / "cache"
    first = CIFAR10JPEG(path=str(npz), cache_dir=str(cache)).load()
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 2 and all(f.endswith(".npy") for f in files), files

    def boom(_):
        raise AssertionError("decoded although the cache exists")

    monkeypatch.setattr(cifar_jpeg, "_decode_jpeg_bytes", boom)
    second = CIFAR10JPEG(path=str(npz), cache_dir=str(cache)).load()
    assert_same(first, second)
    assert sorted(p.name for p in cache.iterdir()) == files  # nothing new, no temp files


def test_cifar10_jpeg_cache_env_and_invalidation(tmp_path, monkeypatch):
    cache = tmp_path / "envcache"
    monkeypatch.setenv("NATMU_CACHE", str(cache))
    npz = make_fake_cifar10_npz(tmp_path / "c.npz", train_per_class=1, test_per_class=1)
    CIFAR10JPEG(path=str(npz)).load()
    assert len(list(cache.glob("*.npy"))) == 2
    # A different file (other content) gets its own cache entries.
    make_fake_cifar10_npz(npz, train_per_class=2, test_per_class=1)
    data = CIFAR10JPEG(path=str(npz)).load()
    assert len(data.train) == 20
    assert len(list(cache.glob("*.npy"))) == 4


def test_cifar10_jpeg_corrupt_cache_is_rebuilt(tmp_path):
    npz = make_fake_cifar10_npz(tmp_path / "c.npz", train_per_class=1, test_per_class=1)
    cache = tmp_path / "cache"
    good = CIFAR10JPEG(path=str(npz), cache_dir=str(cache)).load()
    for p in cache.glob("*.npy"):
        p.write_bytes(b"not a numpy file")
    with pytest.warns(UserWarning, match="cache"):
        again = CIFAR10JPEG(path=str(npz), cache_dir=str(cache)).load()
    assert_same(good, again)


def test_cifar10_jpeg_missing(tmp_path):
    missing = tmp_path / "absent.npz"
    with pytest.raises(FileNotFoundError, match="absent.npz"):
        CIFAR10JPEG(path=str(missing), cache_dir=str(tmp_path)).load()


@pytest.mark.slow
@pytest.mark.skipif(not REAL_NPZ.is_file(), reason=f"{REAL_NPZ} not present")
def test_cifar10_jpeg_real_file(tmp_path):
    data = CIFAR10JPEG(path=str(REAL_NPZ), cache_dir=str(tmp_path)).load()
    check_source_data(data, 10, (3, 32, 32))
    assert data.classes == CIFAR10_CLASSES
    assert len(data.train) == 50000 and len(data.test) == 10000
    assert torch.bincount(data.train.targets).tolist() == [5000] * 10
    assert torch.bincount(data.test.targets).tolist() == [1000] * 10
    means = data.train.images.double().mean(dim=(0, 2, 3)) / 255
    assert torch.allclose(means, torch.tensor([0.4913, 0.4821, 0.4465], dtype=torch.float64), atol=0.002)


# --------------------------------------------------------------------------------------
# Folders of files
# --------------------------------------------------------------------------------------


def test_tiny_imagenet(tmp_path):
    root = make_fake_tiny_imagenet(tmp_path, num_classes=200, train_per_class=1, val_per_class=1)
    data = TinyImageNet(root=str(root)).load()
    check_source_data(data, 200, (3, 64, 64))
    assert len(data.train) == 200 and len(data.test) == 200
    # Labels follow the sorted wnids; names are the first words.txt name, else the wnid.
    assert data.classes[0] == "n00000000"
    assert data.classes[1] == "thing1"
    assert data.classes[50] == "n00000050"
    assert data.classes[199] == "thing199"
    assert data.train.targets.tolist() == list(range(200))
    assert data.test.targets.tolist() == list(range(200))
    # The greyscale training image was converted to RGB (equal channels).
    grey = data.train.images[0]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])
    ref = np.array(Image.open(root / "val" / "images" / "val_7.JPEG").convert("RGB"))
    assert torch.equal(data.test.images[7], torch.from_numpy(ref).permute(2, 0, 1))


def test_tiny_imagenet_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="wnids.txt"):
        TinyImageNet(root=str(tmp_path / "tiny-imagenet-200")).load()


def test_image_folder(tmp_path):
    root = make_fake_image_folder(tmp_path, classes=("cat", "ant", "bee"), per_class=2, size=16)
    data = ImageFolder(str(root / "train"), str(root / "test")).load()
    check_source_data(data, 3, (3, 16, 16))
    assert data.classes == ["ant", "bee", "cat"]
    assert data.train.targets.tolist() == [0, 0, 1, 1, 2, 2]
    ref = np.array(Image.open(root / "train" / "bee" / "1.png").convert("RGB"))
    assert torch.equal(data.train.images[3], torch.from_numpy(ref).permute(2, 0, 1))


def test_image_folder_mode_and_resize(tmp_path):
    root = make_fake_image_folder(tmp_path, per_class=1, size=16)
    grey = ImageFolder(str(root / "train"), str(root / "test"), mode="L").load()
    check_source_data(grey, 2, (1, 16, 16))
    small = ImageFolder(str(root / "train"), str(root / "test"), image_size=8).load()
    check_source_data(small, 2, (3, 8, 8))


def test_image_folder_size_mismatch(tmp_path):
    root = make_fake_image_folder(tmp_path, per_class=2, size=16)
    odd = root / "train" / "b" / "1.png"
    Image.new("RGB", (12, 16)).save(odd)
    with pytest.raises(ValueError, match="1.png") as info:
        ImageFolder(str(root / "train"), str(root / "test")).load()
    assert str(odd) in str(info.value)
    # With image_size everything is resized and loads.
    data = ImageFolder(str(root / "train"), str(root / "test"), image_size=16).load()
    check_source_data(data, 2, (3, 16, 16))


def test_image_folder_errors(tmp_path):
    root = make_fake_image_folder(tmp_path, per_class=1)
    (root / "test" / "zebra").mkdir()
    with pytest.raises(ValueError, match="zebra"):
        ImageFolder(str(root / "train"), str(root / "test")).load()
    with pytest.raises(FileNotFoundError, match="missing"):
        ImageFolder(str(root / "train"), str(root / "missing")).load()
    with pytest.raises(ValueError, match="mode"):
        ImageFolder(str(root / "train"), str(root / "test"), mode="CMYK")
    with pytest.raises(ValueError, match="image_size"):
        ImageFolder(str(root / "train"), str(root / "test"), image_size=0)


def test_image_folder_train_test_size_mismatch(tmp_path):
    root = make_fake_image_folder(tmp_path / "a", per_class=1, size=16)
    other = make_fake_image_folder(tmp_path / "b", per_class=1, size=8)
    with pytest.raises(ValueError, match="image_size"):
        ImageFolder(str(root / "train"), str(other / "test")).load()


# --------------------------------------------------------------------------------------
# Map-style datasets
# --------------------------------------------------------------------------------------


class ListDataset(torch.utils.data.Dataset):
    """A torchvision-style in-memory dataset."""

    def __init__(self, items, classes=None):
        self.items = items
        if classes is not None:
            self.classes = classes

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_map_dataset_pil(tmp_path):
    rng = np.random.default_rng(0)
    arrays = rng.integers(0, 256, size=(6, 5, 7, 3), dtype=np.uint8)
    items = [(Image.fromarray(a), i % 3) for i, a in enumerate(arrays)]
    train = ListDataset(items[:4], classes=["x", "y", "z"])
    test = ListDataset(items[4:])
    data = MapDataset(train, test).load()
    check_source_data(data, 3, (3, 5, 7))
    assert data.classes == ["x", "y", "z"]
    assert torch.equal(data.train.images, torch.from_numpy(arrays[:4]).permute(0, 3, 1, 2))
    assert data.train.targets.tolist() == [0, 1, 2, 0]
    assert data.test.targets.tolist() == [1, 2]


def test_map_dataset_float_tensors():
    rng = np.random.default_rng(1)
    ints = torch.from_numpy(rng.integers(0, 256, size=(5, 1, 4, 4), dtype=np.uint8))
    items = [(x.float() / 255, torch.tensor(i % 4)) for i, x in enumerate(ints)]
    data = MapDataset(ListDataset(items[:3]), ListDataset(items[3:])).load()
    check_source_data(data, 4, (1, 4, 4))  # max label 3 -> classes "0".."3"
    assert data.classes == ["0", "1", "2", "3"]
    assert torch.equal(data.train.images, ints[:3])
    assert torch.equal(data.test.images, ints[3:])


def test_map_dataset_numpy_and_explicit_classes():
    hw = [(np.full((4, 4), i * 10, dtype=np.uint8), i) for i in range(3)]
    data = MapDataset(ListDataset(hw), ListDataset(hw), classes=["p", "q", "r", "s"]).load()
    check_source_data(data, 4, (1, 4, 4))
    assert data.train.images[2].unique().tolist() == [20]


def test_map_dataset_errors():
    bad_range = [(torch.full((3, 4, 4), 2.0), 0)]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        MapDataset(ListDataset(bad_range), ListDataset(bad_range)).load()
    mixed = [(torch.zeros((3, 4, 4), dtype=torch.uint8), 0), (torch.zeros((3, 5, 4), dtype=torch.uint8), 0)]
    with pytest.raises(ValueError, match="one shape"):
        MapDataset(ListDataset(mixed), ListDataset(mixed)).load()
    with pytest.raises(ValueError, match="unsupported"):
        MapDataset(ListDataset([("image", 0)]), ListDataset([("image", 0)])).load()


# --------------------------------------------------------------------------------------
# Synthetic
# --------------------------------------------------------------------------------------


def test_synthetic_images():
    data = SyntheticImages(num_classes=5, train_per_class=8, test_per_class=4, height=12, width=10).load()
    check_source_data(data, 5, (3, 12, 10))
    assert len(data.train) == 40 and len(data.test) == 20
    assert torch.bincount(data.train.targets).tolist() == [8] * 5
    assert data.classes == [f"class_{i}" for i in range(5)]
    other = SyntheticImages(num_classes=5, train_per_class=8, test_per_class=4, height=12, width=10, seed=1).load()
    assert not torch.equal(data.train.images, other.train.images)
    grey = SyntheticImages(num_classes=2, channels=1, classes=["off", "on"]).load()
    check_source_data(grey, 2, (1, 32, 32))
    assert grey.classes == ["off", "on"]


def test_synthetic_images_learnable():
    """A nearest-class-mean classifier already separates the classes."""
    data = SyntheticImages(num_classes=10, train_per_class=20, test_per_class=10).load()
    x_tr = data.train.images.flatten(1).float()
    x_te = data.test.images.flatten(1).float()
    means = torch.stack([x_tr[data.train.targets == k].mean(0) for k in range(10)])
    pred = torch.cdist(x_te, means).argmin(1)
    assert (pred == data.test.targets).float().mean() > 0.9


@pytest.mark.parametrize(
    "kwargs", [{"num_classes": 0}, {"channels": 2}, {"height": 0}, {"num_classes": 3, "classes": ["a"]}]
)
def test_synthetic_images_errors(kwargs):
    with pytest.raises(ValueError):
        SyntheticImages(**kwargs)


# --------------------------------------------------------------------------------------
# Determinism and configuration
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda tmp: Digits(),
        lambda tmp: CIFAR10(root=str(make_fake_cifar10(tmp))),
        lambda tmp: CIFAR100(root=str(make_fake_cifar100(tmp))),
        lambda tmp: CIFAR20(root=str(make_fake_cifar100(tmp))),
        lambda tmp: CIFAR10JPEG(path=str(make_fake_cifar10_npz(tmp / "c.npz")), cache_dir=str(tmp / "cache")),
        lambda tmp: TinyImageNet(root=str(make_fake_tiny_imagenet(tmp, num_classes=5))),
        lambda tmp: ImageFolder(str(make_fake_image_folder(tmp) / "train"), str(tmp / "test"), image_size=8),
        lambda tmp: SyntheticImages(num_classes=3, train_per_class=4, test_per_class=2),
        lambda tmp: MapDataset(
            ListDataset([(torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(i)), i) for i in range(2)]),
            ListDataset([(torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(9)), 1)]),
        ),
    ],
    ids=["digits", "cifar10", "cifar100", "cifar20", "cifar10jpeg", "tiny", "folder", "synthetic", "map"],
)
def test_deterministic(tmp_path, make):
    source = make(tmp_path)
    assert isinstance(source, DataSource)
    assert_same(source.load(), source.load())
    assert type(source).__name__ in repr(source)


def test_jsonargparse_class_path(tmp_path):
    """Sources are configurable with jsonargparse class_path / init_args."""
    jsonargparse = pytest.importorskip("jsonargparse")
    parser = jsonargparse.ArgumentParser()
    parser.add_subclass_arguments(DataSource, "source")
    # ``instantiate`` replaced ``instantiate_classes`` in jsonargparse 4.49.
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    npz = make_fake_cifar10_npz(tmp_path / "c.npz", train_per_class=1, test_per_class=1)
    configs = [
        {"class_path": "natmu_lightning.data.sources.Digits", "init_args": {"test_fraction": 0.25}},
        {"class_path": "natmu_lightning.data.sources.CIFAR20", "init_args": {"root": "x", "download": False}},
        {
            "class_path": "natmu_lightning.data.sources.CIFAR10JPEG",
            "init_args": {"path": str(npz), "cache_dir": str(tmp_path / "cache")},
        },
        {
            "class_path": "natmu_lightning.data.sources.ImageFolder",
            "init_args": {"train_root": "a", "test_root": "b", "image_size": 32, "mode": "L"},
        },
        {
            "class_path": "natmu_lightning.data.sources.SyntheticImages",
            "init_args": {"num_classes": 2, "classes": ["u", "v"]},
        },
    ]
    for config in configs:
        cfg = parser.parse_object({"source": config})
        source = instantiate(cfg).source
        assert type(source).__name__ == config["class_path"].rsplit(".", 1)[1]
        for key, value in config["init_args"].items():
            assert getattr(source, key) == value
    assert instantiate(parser.parse_object({"source": configs[2]})).source.load().num_classes == 10
