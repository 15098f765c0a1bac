"""Forget requests: resolution, balance, determinism and clear errors."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from natmu_lightning.data import (
    ClassForget,
    Digits,
    HardestForget,
    IndexForget,
    RandomForget,
    SubclassForget,
    SyntheticImages,
)
from natmu_lightning.data.sources import ImageSplit, SourceData
from natmu_lightning.natmu import hybrids


@pytest.fixture(scope="module")
def digits():
    return Digits().load()


def test_random_is_class_balanced_and_seeded(digits):
    a = RandomForget(0.1).resolve(digits, seed=0)
    b = RandomForget(0.1).resolve(digits, seed=0)
    c = RandomForget(0.1).resolve(digits, seed=1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    counts = torch.bincount(digits.train.targets[a], minlength=10)
    expected = round(0.1 * digits.train.targets.numel() / 10)
    assert torch.all(counts == expected)
    assert torch.equal(a, a.sort().values) and a.unique().numel() == a.numel()


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1, 1.5])
def test_ratio_outside_open_interval(ratio):
    with pytest.raises(ValueError, match="ratio"):
        RandomForget(ratio)
    with pytest.raises(ValueError, match="ratio"):
        HardestForget(ratio)


def test_random_ratio_too_small_for_any_sample(digits):
    with pytest.raises(ValueError, match="empty"):
        RandomForget(0.001).resolve(digits, seed=0)


def test_explicit_indices_list_and_files(digits, tmp_path):
    values = [5, 3, 100]
    expected = torch.tensor([3, 5, 100])
    assert torch.equal(IndexForget(values).resolve(digits, 0), expected)
    np.save(tmp_path / "f.npy", np.array(values))
    (tmp_path / "f.json").write_text(json.dumps(values))
    (tmp_path / "f.txt").write_text("5, 3\n100\n")
    for name in ("f.npy", "f.json", "f.txt"):
        assert torch.equal(IndexForget(str(tmp_path / name)).resolve(digits, 0), expected)


@pytest.mark.parametrize(
    "values,match",
    [
        ([], "empty"),
        ([-1, 2], "out of range"),
        ([0, 10**6], "out of range"),
        ([1, 1, 2], "repeated"),
        ([1.5, 2], "integers"),
        (["a"], "integers"),
    ],
)
def test_explicit_indices_errors(digits, values, match):
    with pytest.raises(ValueError, match=match):
        IndexForget(values).resolve(digits, 0)


def test_index_file_errors(digits, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        IndexForget(str(tmp_path / "missing.npy")).resolve(digits, 0)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="empty"):
        IndexForget(str(tmp_path / "empty.txt")).resolve(digits, 0)
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match="cannot read"):
        IndexForget(str(tmp_path / "bad.npy")).resolve(digits, 0)
    (tmp_path / "bad.txt").write_text("1 two 3")
    with pytest.raises(ValueError, match="not an integer"):
        IndexForget(str(tmp_path / "bad.txt")).resolve(digits, 0)


def test_whole_training_set_rejected(digits):
    everything = list(range(digits.train.targets.numel()))
    with pytest.raises(ValueError, match="whole training set"):
        IndexForget(everything).resolve(digits, 0)


def test_a_random_request_after_a_full_class_request_draws_from_the_other_classes(digits):
    """After ``ClassForget(3)`` a further ``RandomForget`` balances over the nine classes left (class 3
    has no training sample any more: it was refused for having too few)."""
    from natmu_lightning.data.requests import resolve_excluding
    from natmu_lightning.records import indices_sha256

    class_3 = ClassForget([3]).resolve(digits, 0)
    chosen = resolve_excluding(RandomForget(0.1), digits, 0, None, class_3)
    assert not torch.isin(chosen, class_3).any()
    counts = torch.bincount(digits.train.targets[chosen], minlength=10)
    left = digits.train.targets.numel() - class_3.numel()
    assert counts[3] == 0 and (counts[torch.arange(10) != 3] == round(0.1 * left / 9)).all()
    # a first request draws what it drew before classes could be absent (digest at commit df0e581)
    first = RandomForget(0.1).resolve(digits, 0)
    assert indices_sha256(first) == "dafede6308504bfaeca39d8b32000db29d18496f000ce30e7fb9cfdde8f621ee"


def test_a_further_explicit_request_must_leave_samples_to_learn_from(digits):
    from natmu_lightning.data.requests import resolve_excluding

    total = digits.train.targets.numel()
    earlier = torch.arange(0, total, 2)
    rest = torch.arange(1, total, 2)
    with pytest.raises(ValueError, match="nothing would remain"):
        resolve_excluding(IndexForget(rest.tolist()), digits, 0, None, earlier)
    assert torch.equal(resolve_excluding(IndexForget(rest[:-1].tolist()), digits, 0, None, earlier), rest[:-1])


def test_full_class_by_id_and_name(digits):
    by_id = ClassForget([3]).resolve(digits, 0)
    by_name = ClassForget("3").resolve(digits, 0)
    assert torch.equal(by_id, by_name)
    assert torch.equal(by_id, torch.nonzero(digits.train.targets == 3).flatten())
    two = ClassForget([1, "2"]).resolve(digits, 0)
    assert set(digits.train.targets[two].tolist()) == {1, 2}


@pytest.mark.parametrize("bad", [10, -1, "eleven"])
def test_unknown_class(digits, bad):
    with pytest.raises(ValueError, match="unknown class"):
        ClassForget([bad]).resolve(digits, 0)


def test_subclass_keeps_coarse_label():
    fine = torch.arange(6).repeat_interleave(4)
    coarse = fine // 2
    images = torch.zeros(24, 1, 2, 2, dtype=torch.uint8)
    data = SourceData(
        ImageSplit(images, coarse, fine),
        ImageSplit(images, coarse, fine),
        ["c0", "c1", "c2"],
        ["a", "b", "rocket", "d", "e", "f"],
    )
    indices = SubclassForget("rocket").resolve(data, 0)
    assert torch.equal(indices, torch.arange(8, 12))
    assert set(coarse[indices].tolist()) == {1}
    with pytest.raises(ValueError, match="unknown sub-class"):
        SubclassForget("tractor").resolve(data, 0)


def test_subclass_without_fine_labels(digits):
    with pytest.raises(ValueError, match="fine labels"):
        SubclassForget("rocket").resolve(digits, 0)


def test_hardest_takes_highest_loss(digits):
    losses = torch.arange(digits.train.targets.numel(), dtype=torch.float32)
    picked = HardestForget(0.1).resolve(digits, 0, original_losses=lambda x, y: losses)
    count = round(0.1 * losses.numel())
    assert torch.equal(picked, torch.arange(losses.numel() - count, losses.numel()))
    with pytest.raises(ValueError, match="original model"):
        HardestForget(0.1).resolve(digits, 0)


def expected_refusal(kind, ratio, indices, classes, num_classes, per_class):
    """What the request rules refuse (the docstrings of ``natmu_lightning.data.requests``),
    restated: the start of the error expected, or ``None`` for a valid request."""
    total = num_classes * per_class
    if kind == "random":
        if not 0 < ratio < 1:
            return "forget ratio must lie strictly between 0 and 1"
        chosen = round(ratio * total / num_classes)  # per class
        if chosen < 1:
            return f"ratio={ratio} of {total} samples"
        return "the forget set is the whole training set" if chosen == per_class else None
    if kind == "index":
        if not indices:
            return "the forget set is empty"
        if min(indices) < 0 or max(indices) >= total:
            return "forget indices out of range"
        if len(set(indices)) < len(indices):
            return "forget indices contain"
        return "the forget set is the whole training set" if len(indices) == total else None
    if any(not 0 <= c < num_classes for c in classes):
        return "unknown class id"
    return "the forget set is the whole training set" if len(set(classes)) == num_classes else None


@settings(max_examples=60, deadline=None)
@given(
    num_classes=st.integers(2, 6),
    per_class=st.integers(1, 12),
    kind=st.sampled_from(["random", "index", "class"]),
    ratio=st.floats(-0.5, 1.5),
    indices=st.lists(st.integers(-3, 80), max_size=30),
    classes=st.lists(st.integers(-1, 7), min_size=1, max_size=3),
    seed=st.integers(0, 3),
)
def test_fuzz_requests_succeed_validly_or_fail_clearly(num_classes, per_class, kind, ratio, indices, classes, seed):
    data = SyntheticImages(
        num_classes=num_classes, train_per_class=per_class, test_per_class=1, channels=1, height=4, width=4
    ).load()
    total = data.train.targets.numel()
    refusal = expected_refusal(kind, ratio, indices, classes, num_classes, per_class)

    def resolve():
        if kind == "random":
            return RandomForget(ratio).resolve(data, seed)
        return (IndexForget(indices) if kind == "index" else ClassForget(classes)).resolve(data, seed)

    if refusal is not None:  # refused, with the reason named
        with pytest.raises(ValueError, match=refusal):
            resolve()
        return
    result = resolve()  # a valid request must succeed
    assert result.dtype == torch.int64 and result.ndim == 1
    assert 0 < result.numel() < total
    assert result.min() >= 0 and result.max() < total
    assert torch.equal(result, result.unique())

    # The hybrid plan built on it is valid, or refused with a named error: never a hang.
    keep = torch.ones(total, dtype=torch.bool)
    keep[result] = False
    remain = torch.nonzero(keep).flatten()
    labels = data.train.targets
    probs = torch.rand(result.numel(), num_classes, generator=torch.Generator().manual_seed(seed)).softmax(1)
    k = 1 + seed % 4
    try:
        plan = hybrids.build_hybrid_plan(
            result, labels[result], probs, remain, labels[remain], k=k, generator=torch.Generator().manual_seed(seed)
        )
    except ValueError as error:
        assert "k=" in str(error) or "cannot build" in str(error)
        return
    assert torch.all(plan["label"] != labels[plan["forget_index"]])
    assert torch.equal(plan["label"], labels[plan["remain_index"]])
    assert plan["remain_index"].unique().numel() == plan["remain_index"].numel()
