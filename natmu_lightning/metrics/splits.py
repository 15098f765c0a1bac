"""The evaluator's numbers from the model's outputs on each split: one
:class:`~natmu_lightning.metrics.evaluation.EvaluationMetric` per metric, in the order
:data:`METRICS` computes and records them, and :func:`split_metrics` / :func:`per_sample_outputs`
for code that has the outputs in hand.

Whose outputs each attack reads: the entropy MIA's members are the remaining set and its
non-members the WHOLE test set: for class and sub-class requests that includes the forgotten
kind's test samples (``forget_test``), as the NatMU authors' ``class-wise/natmu.py`` passes its
full ``testDL``. The loss attack separates the forget set from the test samples of the forgotten
kind when there are any (samples of the same classes, so it measures membership, not class),
else from the test set. The SVC attacks' shadow non-members are ``test``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from natmu_lightning.metrics import functional as MF
from natmu_lightning.metrics.evaluation import EvaluationMetric, EvaluationOutputs, compute_metrics, logged_names
from natmu_lightning.metrics.names import RENAMED_KEYS
from natmu_lightning.metrics.reference_free import REFERENCE_FREE_KEYS, reference_free_targets


class Accuracy(EvaluationMetric):
    """Top-1 accuracy (percent) on one split: ``<split>_acc``, logged ``<split>/acc``; nothing
    when the outputs lack the split (``forget_test`` exists for class and sub-class requests only).

    Args:
        split: ``"forget"``, ``"remain"``, ``"test"`` or ``"forget_test"``.
    """

    def __init__(self, split: str) -> None:
        self.split = split
        self.keys = {f"{split}_acc": f"{split}/acc"}

    def compute(self, outputs: EvaluationOutputs, earlier: Mapping[str, float]) -> dict[str, float]:
        if self.split not in outputs.probs:
            return {}
        return {f"{self.split}_acc": MF.accuracy(outputs.probs[self.split], outputs.labels[self.split])}


class EntropyAttack(EvaluationMetric):
    """The paper's entropy MIA (:func:`~natmu_lightning.metrics.functional.mia_entropy`): members
    the remaining set, non-members the whole test set (``forget_test`` included), scored on the
    forget set."""

    keys = {"mia_entropy": "mia/entropy"}

    def compute(self, outputs: EvaluationOutputs, earlier: Mapping[str, float]) -> dict[str, float]:
        probs = outputs.probs
        whole_test = torch.cat([probs["test"], probs["forget_test"]]) if "forget_test" in probs else probs["test"]
        return {"mia_entropy": MF.mia_entropy(probs["remain"], whole_test, probs["forget"])}


class OldNames(EvaluationMetric):
    """Each old name of :data:`~natmu_lightning.metrics.names.RENAMED_KEYS` with its new name's
    value, computed before it (``retain_acc``, logged ``retain/acc``)."""

    keys = {"retain_acc": "retain/acc"}

    def compute(self, outputs: EvaluationOutputs, earlier: Mapping[str, float]) -> dict[str, float]:
        return {old: earlier[RENAMED_KEYS[old]] for old in self.keys}


class ReferenceFreeGap(EvaluationMetric):
    """The reference-free targets and the gap to them
    (:func:`~natmu_lightning.metrics.reference_free.reference_free_targets`); only the gap is
    logged (``gap/reference_free``)."""

    keys = {key: ("gap/reference_free" if key == "reference_free_gap" else None) for key in REFERENCE_FREE_KEYS}

    def compute(self, outputs: EvaluationOutputs, earlier: Mapping[str, float]) -> dict[str, float]:
        probs, labels = outputs.probs, outputs.labels
        return reference_free_targets(
            probs["forget"],
            labels["forget"],
            probs["remain"],
            labels["remain"],
            probs["test"],
            labels["test"],
            probs.get("forget_test"),
            labels.get("forget_test"),
            seed=outputs.seed,
            whole_classes=outputs.whole_classes,
        )


class SVCAttack(EvaluationMetric):
    """The SVC shadow attack (:func:`~natmu_lightning.metrics.functional.svc_mia`) on each of its
    features, % of the forget set predicted NON-member: shadow members the remaining set, shadow
    non-members the test set. The slower attack ``"svc"``."""

    attack = "svc"
    keys = {f"mia_svc_{feature}": f"mia/svc_{feature}" for feature in MF.SVC_FEATURES}

    def compute(self, outputs: EvaluationOutputs, earlier: Mapping[str, float]) -> dict[str, float]:
        probs, labels = outputs.probs, outputs.labels
        return {
            f"mia_svc_{feature}": MF.svc_mia(
                probs["remain"],
                labels["remain"],
                probs["test"],
                labels["test"],
                probs["forget"],
                labels["forget"],
                feature,
            )
            for feature in MF.SVC_FEATURES
        }


class LossAttack(EvaluationMetric):
    """Cross-validated accuracy of a loss attack (:func:`~natmu_lightning.metrics.functional.loss_mia_cv`,
    up to 5 folds; 50 is ideal) separating the forget set from the forgotten kind's test samples,
    or from the test set when there are none; ``nan`` when either has fewer than 2 samples. The
    slower attack ``"loss_cv"``."""

    attack = "loss_cv"
    keys = {"mia_loss_cv": "mia/loss_cv"}

    def compute(self, outputs: EvaluationOutputs, earlier: Mapping[str, float]) -> dict[str, float]:
        probs, labels = outputs.probs, outputs.labels
        nonmembers = "forget_test" if "forget_test" in probs and labels["forget_test"].numel() else "test"
        forget_losses = MF.sample_losses(probs["forget"], labels["forget"])
        nonmember_losses = MF.sample_losses(probs[nonmembers], labels[nonmembers])
        smaller = min(forget_losses.numel(), nonmember_losses.numel())
        if smaller < 2:
            return {"mia_loss_cv": float("nan")}
        folds = min(5, smaller)
        return {"mia_loss_cv": MF.loss_mia_cv(forget_losses, nonmember_losses, n_splits=folds, seed=outputs.seed)}


class KLToReference(EvaluationMetric):
    """Mean ``KL(p_ref || p)`` on the forget set (:func:`~natmu_lightning.metrics.functional.kl_divergence`),
    the paper's naturalness measure."""

    keys = {"kl_to_reference": "ref/kl"}
    reference_splits = ("forget",)

    def compute(self, outputs: EvaluationOutputs, earlier: Mapping[str, float]) -> dict[str, float]:
        return {"kl_to_reference": MF.kl_divergence(outputs.reference_probs["forget"], outputs.probs["forget"])}


class JSToReference(EvaluationMetric):
    """Mean true Jensen-Shannon divergence to the reference on the forget set
    (:func:`~natmu_lightning.metrics.functional.js_divergence`)."""

    keys = {"js_to_reference": "ref/js"}
    reference_splits = ("forget",)

    def compute(self, outputs: EvaluationOutputs, earlier: Mapping[str, float]) -> dict[str, float]:
        return {"js_to_reference": MF.js_divergence(outputs.reference_probs["forget"], outputs.probs["forget"])}


class _SummaryAgainstReference(EvaluationMetric):
    """One number from the values computed before it and the reference's metrics: ``summary``
    of (the model's, the reference's)."""

    reads_reference_metrics = True
    summary: Callable[[Mapping[str, float], Mapping[str, float]], float]

    def compute(self, outputs: EvaluationOutputs, earlier: Mapping[str, float]) -> dict[str, float]:
        assert outputs.reference_metrics is not None  # compute_metrics skips it without a reference
        (key,) = self.keys
        return {key: type(self).summary(earlier, outputs.reference_metrics)}


class AverageGap(_SummaryAgainstReference):
    """Mean |difference| to the reference's test, remaining and forget accuracy and entropy MIA
    (:func:`~natmu_lightning.metrics.functional.avg_gap`), from the values computed before it."""

    keys = {"avg_gap": "gap/avg"}
    summary = staticmethod(MF.avg_gap)


class TugOfWar(_SummaryAgainstReference):
    """The tug-of-war score against the reference's accuracies
    (:func:`~natmu_lightning.metrics.functional.tug_of_war`), from the values computed before it."""

    keys = {"tug_of_war": "gap/tow"}
    summary = staticmethod(MF.tug_of_war)


METRICS: tuple[EvaluationMetric, ...] = (
    Accuracy("forget"),
    Accuracy("remain"),
    Accuracy("test"),
    EntropyAttack(),
    OldNames(),
    Accuracy("forget_test"),
    ReferenceFreeGap(),
    SVCAttack(),
    LossAttack(),
    KLToReference(),
    JSToReference(),
    AverageGap(),
    TugOfWar(),
)
"""The evaluator's metrics, in the order they are computed and recorded."""

ATTACKS = tuple(metric.attack for metric in METRICS if metric.attack is not None)
"""The slower attacks beyond the entropy MIA (always computed), by name: the SVC shadow
protocol on confidence / entropy / m-entropy (``"svc"``), and the cross-validated loss
attack (``"loss_cv"``)."""

LOG_KEYS = logged_names(METRICS)
"""Each logged record key of :data:`METRICS` and the key it is logged under."""


def split_metrics(
    probs: dict[str, Tensor],
    labels: dict[str, Tensor],
    attacks: Sequence[str] = (),
    seed: int = 0,
    whole_classes: bool | None = None,
) -> dict[str, float]:
    """The values of :data:`METRICS` that need no reference: accuracies (percent) of each split,
    the entropy MIA, the reference-free targets and the requested slower ``attacks`` (see
    :data:`ATTACKS`; the module docstring says whose outputs each attack reads).

    ``whole_classes`` (default: inferred from ``labels``) says whether the forget set's classes
    have no remaining sample, for the reference-free targets.
    """
    chosen = [metric for metric in METRICS if metric.attack is None or metric.attack in attacks]
    return compute_metrics(chosen, EvaluationOutputs(probs, labels, seed, whole_classes))


def per_sample_outputs(probs: Mapping[str, Tensor], labels: Mapping[str, Tensor]) -> dict[str, np.ndarray]:
    """``<split>_entropy`` and ``<split>_loss`` (cross-entropy) arrays of every split."""
    out = {}
    for name, p in probs.items():
        out[f"{name}_entropy"] = MF.entropy(p.double()).numpy()
        out[f"{name}_loss"] = MF.sample_losses(p, labels[name]).numpy()
    return out
