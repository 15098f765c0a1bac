"""Reference-free targets: what a Retrain would be expected to score, from the model's own outputs.

Judging unlearning against Retrain needs a Retrain, and avoiding one is the point of
unlearning. A Retrain never saw the forget set, so on it it behaves as on other unseen
samples of the same kind. :func:`reference_free_targets` measures the unlearned model on
such samples and compares:

- **forget accuracy** with the accuracy on unseen samples of the same kind: the test set
  for a random (or explicit, or hardest) request; the forgotten sub-class's test images for
  a sub-class request; and 0 when whole classes are forgotten (no remaining sample of the
  forget set's classes), since a model never trained on a class does not predict it (Retrain
  scores 0.00 on digits, benchmarks/RESULTS.md; chance, 100/C, would reward a model that
  still recognises the class);
- **the entropy MIA** on the forget set with the same attack on held-out non-members: the
  attack (:func:`~natmu_lightning.metrics.functional.mia_entropy`) is fit on the remaining
  set against part of the test set and scores both the forget set and test samples it did
  not see (a seeded half of the test set; for class and sub-class requests the forgotten
  kind's test images, which are non-members of the same classes).

``reference_free_gap`` is the mean of the two absolute differences, in points. It is a
proxy: on a hardest-samples request a Retrain scores far below the test accuracy on the
forget set, and the target cannot know that. ``benchmarks/quality.py`` reports how well it
ranks methods the way the gap to a real Retrain does.
"""

from __future__ import annotations

import torch
from torch import Tensor

from natmu_lightning.metrics.functional import accuracy, mia_entropy_rates

REFERENCE_FREE_KEYS = ("rf_forget_acc_target", "rf_mia_forget", "rf_mia_target", "reference_free_gap")


def reference_free_targets(
    forget_probs: Tensor,
    forget_labels: Tensor,
    remain_probs: Tensor,
    remain_labels: Tensor,
    test_probs: Tensor,
    test_labels: Tensor,
    forget_test_probs: Tensor | None = None,
    forget_test_labels: Tensor | None = None,
    seed: int = 0,
    whole_classes: bool | None = None,
) -> dict[str, float]:
    """The reference-free targets and the gap to them (see the module docstring).

    Args:
        forget_probs, forget_labels: the forget set's softmax outputs and labels.
        remain_probs, remain_labels: the remaining set's (the attack's members).
        test_probs, test_labels: the test set's, outside the forgotten kind for class and
            sub-class requests.
        forget_test_probs, forget_test_labels: the forgotten kind's test samples (class and
            sub-class requests), else ``None`` or empty.
        seed: seed of the held-out half of the test set (random requests).
        whole_classes: whether no remaining sample shares a class with the forget set;
            ``None`` infers it from ``remain_labels`` (pass it when those are a subset).

    Returns:
        ``rf_forget_acc_target``, ``rf_mia_forget`` (the attack's member rate on the forget
        set, percent), ``rf_mia_target`` (its member rate on the held-out non-members) and
        ``reference_free_gap``; ``nan`` where a set is too small to measure.

    Example:
        >>> p = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
        >>> y = torch.tensor([0, 1, 0, 1])
        >>> out = reference_free_targets(p[:2], y[:2], p, y, p, y)
        >>> out["rf_forget_acc_target"]  # the test accuracy
        100.0
    """
    if whole_classes is None:
        whole_classes = not bool(torch.isin(forget_labels.unique(), remain_labels).any())
    if forget_test_probs is not None and forget_test_labels is not None and forget_test_labels.numel():
        fit_nonmembers, held_out = test_probs, forget_test_probs
        same_kind_acc = accuracy(forget_test_probs, forget_test_labels)
    else:
        order = torch.randperm(test_labels.numel(), generator=torch.Generator().manual_seed(seed))
        half = test_labels.numel() // 2
        held_out, fit_nonmembers = test_probs[order[:half]], test_probs[order[half:]]
        same_kind_acc = accuracy(test_probs, test_labels)
    target = 0.0 if whole_classes else same_kind_acc
    if held_out.shape[0] == 0 or fit_nonmembers.shape[0] == 0 or remain_probs.shape[0] == 0:
        mia_forget = mia_target = float("nan")
    else:
        mia_forget, mia_target = mia_entropy_rates(remain_probs, fit_nonmembers, forget_probs, held_out)
    forget_acc = accuracy(forget_probs, forget_labels)
    return {
        "rf_forget_acc_target": target,
        "rf_mia_forget": mia_forget,
        "rf_mia_target": mia_target,
        "reference_free_gap": (abs(forget_acc - target) + abs(mia_forget - mia_target)) / 2,
    }
