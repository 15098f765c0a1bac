"""The evaluator's numbers from the model's outputs on each split: accuracies, the attacks and
the reference-free targets (:func:`split_metrics`), and per-sample outputs for reports."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from natmu_lightning.metrics import functional as MF
from natmu_lightning.metrics.names import RENAMED_KEYS
from natmu_lightning.metrics.reference_free import reference_free_targets

ATTACKS = ("svc", "loss_cv")
"""Attacks beyond the entropy MIA (always computed): the SVC shadow protocol on
confidence / entropy / m-entropy, and the cross-validated loss attack."""


def split_metrics(
    probs: dict[str, Tensor],
    labels: dict[str, Tensor],
    attacks: Sequence[str] = (),
    seed: int = 0,
    whole_classes: bool | None = None,
) -> dict[str, float]:
    """Accuracies (percent) of each split, the entropy MIA and the requested slower ``attacks``
    (see :data:`ATTACKS`).

    The entropy MIA's members are the remaining set and its non-members the WHOLE test set:
    for class and sub-class requests that includes the forgotten kind's test samples
    (``forget_test``), as the NatMU authors' ``class-wise/natmu.py`` passes its full
    ``testDL``. The loss attack separates the forget set from the test samples of the
    forgotten kind when there are any (samples of the same classes, so it measures
    membership, not class), else from the test set. The SVC attacks' shadow non-members
    are ``test``. ``whole_classes`` (default: inferred from ``labels``) says whether the
    forget set's classes have no remaining sample, for the reference-free targets.
    """
    whole_test = torch.cat([probs["test"], probs["forget_test"]]) if "forget_test" in probs else probs["test"]
    metrics = {
        "forget_acc": MF.accuracy(probs["forget"], labels["forget"]),
        "remain_acc": MF.accuracy(probs["remain"], labels["remain"]),
        "test_acc": MF.accuracy(probs["test"], labels["test"]),
        "mia_entropy": MF.mia_entropy(probs["remain"], whole_test, probs["forget"]),
    }
    metrics.update({old: metrics[new] for old, new in RENAMED_KEYS.items()})
    if "forget_test" in probs:
        metrics["forget_test_acc"] = MF.accuracy(probs["forget_test"], labels["forget_test"])
    metrics.update(
        reference_free_targets(
            probs["forget"],
            labels["forget"],
            probs["remain"],
            labels["remain"],
            probs["test"],
            labels["test"],
            probs.get("forget_test"),
            labels.get("forget_test"),
            seed=seed,
            whole_classes=whole_classes,
        )
    )
    if "svc" in attacks:
        for feature in ("confidence", "entropy", "m_entropy"):
            metrics[f"mia_svc_{feature}"] = MF.svc_mia(
                probs["remain"],
                labels["remain"],
                probs["test"],
                labels["test"],
                probs["forget"],
                labels["forget"],
                feature,
            )
    if "loss_cv" in attacks:
        nonmembers = "forget_test" if "forget_test" in probs and labels["forget_test"].numel() else "test"
        losses = {
            name: -torch.log(probs[name].double().gather(1, labels[name][:, None]).clamp_min(1e-30)).flatten()
            for name in ("forget", nonmembers)
        }
        smaller = min(losses["forget"].numel(), losses[nonmembers].numel())
        metrics["mia_loss_cv"] = (
            MF.loss_mia_cv(losses["forget"], losses[nonmembers], n_splits=min(5, smaller), seed=seed)
            if smaller >= 2
            else float("nan")
        )
    return metrics


def per_sample_outputs(probs: dict[str, Tensor], labels: dict[str, Tensor]) -> dict[str, np.ndarray]:
    """``<split>_entropy`` and ``<split>_loss`` (cross-entropy) arrays of every split."""
    out = {}
    for name, p in probs.items():
        out[f"{name}_entropy"] = MF.entropy(p.double()).numpy()
        out[f"{name}_loss"] = (
            (-torch.log(p.double().gather(1, labels[name][:, None]).clamp_min(1e-30))).flatten().numpy()
        )
    return out
