"""Unlearning metrics: pure functions (:mod:`.functional`), torchmetrics classes, and the
evaluator's metric objects (:mod:`.evaluation`: how to write one; :mod:`.splits`: the built-in ones)."""

from natmu_lightning.metrics.classes import EntropyMIA, JSDivergence, KLDivergenceToReference, SplitAccuracy
from natmu_lightning.metrics.evaluation import EvaluationMetric, EvaluationOutputs

__all__ = [
    "EntropyMIA",
    "EvaluationMetric",
    "EvaluationOutputs",
    "JSDivergence",
    "KLDivergenceToReference",
    "SplitAccuracy",
]
