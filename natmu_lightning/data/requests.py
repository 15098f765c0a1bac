"""Forget requests: which training samples a user asks the model to forget.

Each request is a small config object (``class_path`` in YAML) whose :meth:`resolve`
turns it into a sorted 1-D int64 tensor of training-set indices. Every request is
validated before any training and fails with a ``ValueError`` naming the problem.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from natmu_lightning.data.sources import ImageSplit, SourceData
from natmu_lightning.images import Images, take

LossFn = Callable[[Images, Tensor], Tensor]
"""(train images uint8, train targets) -> per-sample loss of the original model."""


class ForgetRequest(abc.ABC):
    """A request to forget part of the training set."""

    needs_original_model: bool = False
    """True when resolving needs the original model's per-sample losses."""
    explicit_indices: bool = False
    """True when the request names training-set indices itself (rather than choosing them)."""

    @abc.abstractmethod
    def resolve(self, data: SourceData, seed: int, original_losses: LossFn | None = None) -> Tensor:
        """Return the sorted, unique training-set indices to forget.

        Args:
            data: the loaded dataset.
            seed: seed for any random choice.
            original_losses: computes the original model's per-sample losses
                (only for requests with ``needs_original_model``).
        """

    def forgotten_test_mask(self, data: SourceData) -> Tensor | None:
        """For requests that forget a whole kind of sample (a class, a sub-class): which test
        samples are of that kind (the evaluator reports them apart); ``None`` otherwise."""
        return None

    def describe(self) -> str:
        """One line for logs and summaries."""
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


def _check_ratio(ratio: float) -> None:
    if not 0.0 < float(ratio) < 1.0:
        raise ValueError(f"forget ratio must lie strictly between 0 and 1, got {ratio}")


class RandomForget(ForgetRequest):
    """A seeded, class-balanced random fraction of the training set.

    Every class with training samples contributes ``round(ratio * N / C)`` samples, drawn
    uniformly (``C`` counts those classes: after a full-class request, the others).

    Args:
        ratio: fraction of the training set to forget, in (0, 1).
    """

    def __init__(self, ratio: float = 0.1) -> None:
        _check_ratio(ratio)
        self.ratio = ratio

    def resolve(self, data: SourceData, seed: int, original_losses: LossFn | None = None) -> Tensor:
        targets = data.train.targets
        present = [c for c in range(len(data.classes)) if bool((targets == c).any())]
        per_class = round(self.ratio * targets.numel() / max(len(present), 1))
        if per_class < 1:
            raise ValueError(
                f"ratio={self.ratio} of {targets.numel()} samples over {len(present)} classes "
                "gives 0 samples per class: the forget set would be empty"
            )
        generator = torch.Generator().manual_seed(seed)
        chosen = []
        for c in present:
            members = torch.nonzero(targets == c).flatten()
            if members.numel() < per_class:
                raise ValueError(
                    f"class {data.classes[c]!r} has {members.numel()} training samples, "
                    f"fewer than the {per_class} a class-balanced ratio={self.ratio} needs"
                )
            chosen.append(members[torch.randperm(members.numel(), generator=generator)[:per_class]])
        return _finish(torch.cat(chosen), data)


class IndexForget(ForgetRequest):
    """Explicit training-set indices: a list, or a ``.npy``/``.txt``/``.json`` file.

    A ``forget_indices.npy`` saved by any run can be passed back here, so every method
    and Retrain run on exactly the same set.

    Args:
        indices: the indices, or a path to a file holding them.
    """

    explicit_indices = True

    def __init__(self, indices: list[int] | str) -> None:
        self.indices = indices

    def resolve(self, data: SourceData, seed: int, original_losses: LossFn | None = None) -> Tensor:
        values = load_indices(self.indices) if isinstance(self.indices, (str, Path)) else self.indices
        return _finish(_as_index_tensor(values, "indices"), data, reject_repeats=True)


class ClassForget(ForgetRequest):
    """Every training sample of one or more classes (full-class forgetting).

    Args:
        classes: class ids or class names.
    """

    def __init__(self, classes: list[int | str] | int | str) -> None:
        self.classes = classes if isinstance(classes, list) else [classes]

    def resolve(self, data: SourceData, seed: int, original_losses: LossFn | None = None) -> Tensor:
        ids = [class_id(c, data.classes, "class") for c in self.classes]
        mask = torch.isin(data.train.targets, torch.tensor(ids))
        return _finish(torch.nonzero(mask).flatten(), data)

    def class_ids(self, data: SourceData) -> list[int]:
        """The forgotten classes as ids."""
        return [class_id(c, data.classes, "class") for c in self.classes]

    def forgotten_test_mask(self, data: SourceData) -> Tensor:
        return torch.isin(data.test.targets, torch.tensor(self.class_ids(data)))


class SubclassForget(ForgetRequest):
    """Every training sample of one fine class inside a coarse label (e.g. CIFAR-20).

    The coarse label stays; only the fine class's samples are forgotten.

    Args:
        subclass: fine class id or name (e.g. ``"rocket"``).
    """

    def __init__(self, subclass: int | str) -> None:
        self.subclass = subclass

    def resolve(self, data: SourceData, seed: int, original_losses: LossFn | None = None) -> Tensor:
        fine_id, fine_targets = self._fine_id(data), data.train.fine_targets
        assert fine_targets is not None  # _fine_id raised otherwise
        return _finish(torch.nonzero(fine_targets == fine_id).flatten(), data)

    def forgotten_test_mask(self, data: SourceData) -> Tensor:
        fine_id, fine_targets = self._fine_id(data), data.test.fine_targets
        assert fine_targets is not None  # SourceData holds fine labels in both splits or in neither
        return fine_targets == fine_id

    def _fine_id(self, data: SourceData) -> int:
        if data.train.fine_targets is None or data.fine_classes is None:
            raise ValueError(
                "a sub-class request needs a dataset with fine labels inside coarse ones "
                "(e.g. CIFAR20); this dataset has none"
            )
        return class_id(self.subclass, data.fine_classes, "sub-class")


class HardestForget(ForgetRequest):
    """The fraction of the training set the original model finds hardest.

    Criterion: highest cross-entropy loss of the original model (eval mode) on the
    un-augmented training sample; ties broken by the lower index.

    Args:
        ratio: fraction of the training set to forget, in (0, 1).
    """

    needs_original_model = True

    def __init__(self, ratio: float = 0.1) -> None:
        _check_ratio(ratio)
        self.ratio = ratio

    def resolve(self, data: SourceData, seed: int, original_losses: LossFn | None = None) -> Tensor:
        if original_losses is None:
            raise ValueError(
                "HardestForget needs the original model's losses: resolve it in a run whose "
                "module holds the original weights (e.g. NatMUModule with original_ckpt), then "
                "pass the saved forget_indices.npy to other runs through IndexForget"
            )
        count = round(self.ratio * data.train.targets.numel())
        if count < 1:
            raise ValueError(f"ratio={self.ratio} selects no sample of {data.train.targets.numel()}")
        losses = original_losses(data.train.images, data.train.targets).double().cpu()
        order = torch.sort(-losses, stable=True).indices
        return _finish(order[:count], data)


def resolve_excluding(
    request: ForgetRequest, data: SourceData, seed: int, original_losses: LossFn | None, excluded: Tensor
) -> Tensor:
    """Resolve ``request`` among the training samples outside ``excluded`` (the samples earlier
    deletion requests forgot), in the full training set's indices.

    A request that chooses samples (random, hardest, class, sub-class) chooses on a copy of the
    training split without the excluded samples, so it can never pick one of them; one that
    names indices (:class:`IndexForget`) must not name one.

    Raises:
        ValueError: an explicit request names an excluded sample (and the request's own errors).
    """
    if excluded.numel() == 0:
        return request.resolve(data, seed, original_losses)
    if request.explicit_indices:
        indices = request.resolve(data, seed, original_losses)
        again = indices[torch.isin(indices, excluded)]
        if again.numel():
            raise ValueError(
                f"the request names {again.numel()} training samples that earlier requests already forgot "
                f"(e.g. {again[:5].tolist()}); they are out of the training set, list only the new ones"
            )
        if indices.numel() + excluded.numel() >= data.train.targets.numel():
            raise ValueError(
                f"the request names all {indices.numel()} training samples that earlier requests left: "
                "nothing would remain to learn from"
            )
        return indices
    keep = torch.ones(data.train.targets.numel(), dtype=torch.bool)
    keep[excluded] = False
    kept = torch.nonzero(keep).flatten()
    train = data.train
    fine = train.fine_targets[kept] if train.fine_targets is not None else None
    view = SourceData(
        ImageSplit(take(train.images, kept), train.targets[kept], fine), data.test, data.classes, data.fine_classes
    )
    return kept[request.resolve(view, seed, original_losses)]  # sorted, as both are


def class_id(value: int | str, names: Sequence[str], what: str) -> int:
    """Turn a class id or name into an id, with a clear error for unknown values."""
    if isinstance(value, bool):
        raise ValueError(f"unknown {what} {value!r}")
    if isinstance(value, int):
        if 0 <= value < len(names):
            return value
        raise ValueError(f"unknown {what} id {value}: ids run from 0 to {len(names) - 1}")
    if value in names:
        return list(names).index(value)
    if isinstance(value, str) and value.isdigit() and int(value) < len(names):
        return int(value)
    raise ValueError(f"unknown {what} {value!r}; known: {', '.join(map(str, names))}")


def load_indices(path: str | Path) -> list[int]:
    """Read indices from a ``.npy``, ``.json`` (a list) or ``.txt`` (whitespace/comma separated) file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"forget index file {str(path)!r} does not exist")
    try:
        if path.suffix == ".npy":
            values = np.load(path, allow_pickle=False).reshape(-1).tolist()
        elif path.suffix == ".json":
            values = json.loads(path.read_text())
        else:
            text = path.read_text().replace(",", " ").split()
            values = [_parse_int(token) for token in text]
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read forget indices from {str(path)!r}: {error}") from error
    if not isinstance(values, list):
        raise ValueError(f"{str(path)!r} must hold a list of indices")
    if not values:
        raise ValueError(f"forget index file {str(path)!r} is empty")
    return values


def _parse_int(token: str) -> int:
    try:
        return int(token)
    except ValueError:
        raise ValueError(f"{token!r} is not an integer index") from None


def _as_index_tensor(values: Sequence, what: str) -> Tensor:
    array = np.asarray(values)
    if array.size and not (np.issubdtype(array.dtype, np.integer) or _all_integral(array)):
        raise ValueError(f"forget {what} must be integers, got {array.dtype} values such as {array.reshape(-1)[0]!r}")
    return torch.as_tensor(array.astype(np.int64).reshape(-1))


def _all_integral(array: np.ndarray) -> bool:
    if not np.issubdtype(array.dtype, np.floating):
        return False
    return bool(np.all(np.isfinite(array)) and np.all(array == np.round(array)))


def _finish(indices: Tensor, data: SourceData, reject_repeats: bool = False) -> Tensor:
    """Validate and sort resolved indices."""
    total = data.train.targets.numel()
    if indices.numel() == 0:
        raise ValueError("the forget set is empty: the request selects no training sample")
    if int(indices.min()) < 0 or int(indices.max()) >= total:
        bad = indices[(indices < 0) | (indices >= total)][:5].tolist()
        raise ValueError(f"forget indices out of range [0, {total}): {bad}")
    unique = torch.unique(indices)
    if reject_repeats and unique.numel() != indices.numel():
        raise ValueError(f"forget indices contain {indices.numel() - unique.numel()} repeated entries")
    if unique.numel() == total:
        raise ValueError("the forget set is the whole training set: nothing would remain to learn from")
    return unique
