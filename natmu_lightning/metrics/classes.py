"""torchmetrics classes: they only manage state; the math is in :mod:`.functional`.

Sums are kept as sums (never per-rank ratios) and sample-level features as 1-D float
``cat`` states, the only list states torchmetrics gathers with uneven sizes across
ranks (docs/design.md §4). Drop them into your own LightningModule; the
:class:`~natmu_lightning.callbacks.UnlearningEvaluator` instead gathers the outputs
themselves in order and calls the functional forms, which keeps its numbers bitwise
identical to one device.

The SVC shadow attack (:func:`~.functional.svc_mia`, which keeps the FIRST ``n`` rows of
the larger shadow set) and the loss attack (:func:`~.functional.loss_mia_cv`, seeded
subsampling and folds) depend on the order of the samples. A ``cat`` state gathered
across ranks arrives in rank order, not dataset order, so a state class for them could
not match one device; they have no class here and are computed by the evaluator on
outputs gathered in dataset order.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torchmetrics import Metric

from natmu_lightning.metrics import functional as MF


class _SampleMean(Metric):
    """``scale`` times the mean of a per-sample value, kept as a float64 ``value_sum`` and ``count``.

    Both states are summed across ranks, so the result is the single-process mean over all
    ranks' samples. ``nan`` before any sample.
    """

    full_state_update = False
    scale = 1.0  # 100.0 for a percentage
    value_sum: Tensor
    count: Tensor

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("value_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.float64), dist_reduce_fx="sum")

    def _add(self, values: Tensor) -> None:
        self.value_sum += values.sum().to(torch.float64)
        self.count += values.numel()

    def compute(self) -> Tensor:
        if self.count == 0:
            return torch.tensor(float("nan"), dtype=torch.float64)
        return self.scale * self.value_sum / self.count


class SplitAccuracy(_SampleMean):
    """Top-1 accuracy in percent (e.g. forget, remaining or test accuracy).

    Example:
        >>> metric = SplitAccuracy()
        >>> metric.update(torch.tensor([[0.9, 0.1], [0.2, 0.8]]), torch.tensor([0, 0]))
        >>> metric.compute()
        tensor(50., dtype=torch.float64)
    """

    higher_is_better: bool | None = None
    scale = 100.0

    def update(self, probs: Tensor, labels: Tensor) -> None:
        """Add ``(N, C)`` probabilities (or logits) and ``(N,)`` labels.

        Raises:
            ValueError: ``labels`` not of shape ``(N,)``.
        """
        if labels.shape != probs.shape[:1]:
            raise ValueError(
                f"labels must have shape ({probs.shape[0]},), one per row of probs, got {tuple(labels.shape)}"
            )
        self._add(probs.argmax(dim=1) == labels)


class EntropyMIA(Metric):
    """The NatMU paper's entropy attack (:func:`~.functional.mia_entropy`), in percent.

    ``update`` takes probabilities of one role: ``"member"`` (remaining set),
    ``"nonmember"`` (test set) or ``"target"`` (forget set). Entropies are stored as
    1-D float64 ``cat`` states; the fit is invariant to their order, so the result
    across ranks equals one device's whenever every sample is fed exactly once. The attack
    itself is :func:`~.functional.entropy_attack_rates`, the one :func:`~.functional.mia_entropy`
    runs, so the two agree bit for bit.

    Example:
        >>> mia = EntropyMIA()
        >>> mia.update(torch.tensor([[0.99, 0.01], [0.98, 0.02]]), "member")
        >>> mia.update(torch.tensor([[0.6, 0.4], [0.5, 0.5]]), "nonmember")
        >>> mia.update(torch.tensor([[0.97, 0.03], [0.55, 0.45]]), "target")
        >>> float(mia.compute())
        50.0
    """

    full_state_update = False
    higher_is_better: bool | None = None
    ROLES = ("member", "nonmember", "target")

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for role in self.ROLES:
            self.add_state(f"{role}_entropy", default=[], dist_reduce_fx="cat")

    def update(self, probs: Tensor, role: str) -> None:
        if role not in self.ROLES:
            raise ValueError(f"role must be one of {self.ROLES}, got {role!r}")
        getattr(self, f"{role}_entropy").append(MF.entropy(probs.to(torch.float64)))

    def compute(self) -> Tensor:
        member, nonmember, target = (_cat(getattr(self, f"{role}_entropy")) for role in self.ROLES)
        (rate,) = MF.entropy_attack_rates(member, nonmember, target)
        return torch.tensor(rate, dtype=torch.float64, device=target.device)


class _RowDivergence(_SampleMean):
    """Mean of a per-row divergence: ``_rows`` of ``update``'s two tensors."""

    higher_is_better = False
    _rows: Callable[[Tensor, Tensor], Tensor]

    def update(self, first: Tensor, second: Tensor) -> None:
        """Add two ``(N, C)`` probability tensors: ``(p_ref, p)`` for KL, ``(p, q)`` for JS."""
        self._add(self._rows(first, second))


class KLDivergenceToReference(_RowDivergence):
    """Mean ``KL(p_ref || p)`` (:func:`~.functional.kl_divergence`); ``update(p_ref, p)``.

    Example:
        >>> kl = KLDivergenceToReference()
        >>> kl.update(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 0.5]]))
        >>> round(float(kl.compute()), 6)
        0.693147
    """

    _rows = staticmethod(MF.kl_divergence_rows)


class JSDivergence(_RowDivergence):
    """Mean true Jensen-Shannon divergence (:func:`~.functional.js_divergence`); ``update(p, q)``.

    Rows accumulate over updates: below, the mean of ``0`` and ``ln 2``.

    Example:
        >>> js = JSDivergence()
        >>> same = torch.tensor([[0.3, 0.7]])
        >>> js.update(same, same)
        >>> js.update(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]))
        >>> round(float(js.compute()), 4)
        0.3466
    """

    _rows = staticmethod(MF.js_divergence_rows)


def _cat(values) -> Tensor:
    if isinstance(values, Tensor):
        return values.to(torch.float64)
    return torch.cat(values).to(torch.float64) if values else torch.zeros(0, dtype=torch.float64)
