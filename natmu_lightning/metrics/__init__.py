"""Unlearning metrics: pure functions (:mod:`.functional`) and torchmetrics classes."""

from natmu_lightning.metrics.classes import EntropyMIA, JSDivergence, KLDivergenceToReference, SplitAccuracy

__all__ = ["EntropyMIA", "JSDivergence", "KLDivergenceToReference", "SplitAccuracy"]
