"""What an evaluator metric is: one object that declares the keys it writes and logs and what it
reads, and computes its values from the outputs gathered on every split.

:class:`~natmu_lightning.callbacks.UnlearningEvaluator` runs an ordered list of them (the
built-in ones are :data:`natmu_lightning.metrics.splits.METRICS`; ``extra_metrics`` adds your
own): each one's values go to the record under its :attr:`~EvaluationMetric.keys`, are logged
under the keys those map to, and are there for the metrics after it (the average gap reads the
accuracies computed before it). Adding a metric is writing one subclass of
:class:`EvaluationMetric`; the math belongs in :mod:`natmu_lightning.metrics.functional`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from torch import Tensor


@dataclass(frozen=True)
class BankOutputs:
    """What the metrics against a bank of Retrains read
    (:class:`~natmu_lightning.metrics.bank.ReferenceBankMetric`, ``UnlearningEvaluator(reference_bank=...)``).

    Attributes:
        probs: the evaluated model's softmax outputs on the bank's splits: ``forget`` (whole),
            ``remain`` and ``test`` (the bank's fixed seeded slices).
        labels: the labels of those samples.
        member_scores: each bank member's per-sample score on the same samples, (members, samples).
    """

    probs: Mapping[str, Tensor]
    labels: Mapping[str, Tensor]
    member_scores: Mapping[str, Tensor]


@dataclass(frozen=True)
class EvaluationOutputs:
    """What one evaluation measured, for the metrics to compute from.

    Attributes:
        probs: softmax outputs of each split, in dataset order: ``forget``, ``remain``, ``test``
            and, for class and sub-class requests, ``forget_test`` (the forgotten kind's test
            samples, which ``test`` then leaves out).
        labels: the labels of each split.
        seed: seed of the metrics' random draws (the loss attack's folds, the reference-free
            held-out half of the test set).
        whole_classes: whether no remaining sample shares a class with the forget set (``None``:
            inferred from ``labels["remain"]`` where needed; pass it when that is a subset).
        reference_probs: the reference's (Retrain's) outputs on the splits the metrics read
            (:attr:`EvaluationMetric.reference_splits`); empty without a reference.
        reference_metrics: the reference's own metrics (those that need no reference), ``None``
            without a reference.
        bank: the outputs compared with a bank of Retrains, ``None`` without one.
    """

    probs: Mapping[str, Tensor]
    labels: Mapping[str, Tensor]
    seed: int = 0
    whole_classes: bool | None = None
    reference_probs: Mapping[str, Tensor] = field(default_factory=dict)
    reference_metrics: Mapping[str, float] | None = None
    bank: BankOutputs | None = None


class EvaluationMetric(ABC):
    """One metric of the evaluator: its keys, what it needs, and how it is computed.

    Subclasses set the class attributes below (or the same names on the instance) and
    implement :meth:`compute`.

    Attributes:
        keys: the record keys it writes, in order, each mapped to the key it is logged under
            (``"forget_acc" -> "forget/acc"``), or to ``None`` for a value that is recorded only.
        attack: the name of a slower attack (``UnlearningEvaluator(attacks=...)`` selects it by
            this name): run at the final evaluation only, unless ``attacks_every_epoch``.
            ``None`` for a metric computed at every evaluation.
        reference_splits: the splits whose reference outputs it reads
            (:attr:`EvaluationOutputs.reference_probs`).
        reads_reference_metrics: whether it reads the reference's metrics.
    """

    keys: Mapping[str, str | None]
    attack: str | None = None
    reference_splits: tuple[str, ...] = ()
    reads_reference_metrics: bool = False

    @property
    def needs_reference(self) -> bool:
        """Whether it is computed only with a reference (and never for the reference itself)."""
        return bool(self.reference_splits) or self.reads_reference_metrics

    @abstractmethod
    def compute(self, outputs: EvaluationOutputs, earlier: Mapping[str, float]) -> dict[str, float]:
        """Its values, keyed by (some of) :attr:`keys`.

        Args:
            outputs: the evaluation's outputs.
            earlier: the values of the metrics before it in the list, this evaluation.

        Returns:
            The values; a metric that does not apply (e.g. to a split the outputs lack) returns
            none.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(self.keys)})"


def compute_metrics(metrics: Iterable[EvaluationMetric], outputs: EvaluationOutputs) -> dict[str, float]:
    """The values of ``metrics``, computed in order; those that need a reference are skipped
    when ``outputs`` have none."""
    values: dict[str, float] = {}
    for metric in metrics:
        if metric.needs_reference and outputs.reference_metrics is None:
            continue
        values.update(metric.compute(outputs, values))
    return values


def logged_names(metrics: Iterable[EvaluationMetric]) -> dict[str, str]:
    """Each logged record key of ``metrics`` mapped to the key it is logged under.

    Raises:
        ValueError: two metrics write the same record key or log under the same key.
    """
    records: set[str] = set()
    logged: dict[str, str] = {}
    for metric in metrics:
        for key, name in metric.keys.items():
            if key in records or (name is not None and name in logged.values()):
                raise ValueError(f"{metric!r} writes {key!r} (logged {name!r}), which another metric writes")
            records.add(key)
            if name is not None:
                logged[key] = name
    return logged


def check_attacks(metrics: Iterable[EvaluationMetric], attacks: Sequence[str]) -> None:
    """Refuse slower ``attacks`` that no metric of ``metrics`` is named after.

    Raises:
        ValueError: naming the unknown attacks and the known ones.
    """
    known = tuple(dict.fromkeys(metric.attack for metric in metrics if metric.attack is not None))
    unknown = set(attacks) - set(known)
    if unknown:
        raise ValueError(f"unknown attacks {sorted(unknown)}; choose from {known}")
