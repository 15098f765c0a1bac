"""Callbacks: the unlearning evaluator and the unlearning record."""

from natmu_lightning.callbacks.evaluator import UnlearningEvaluator
from natmu_lightning.callbacks.record import UnlearningRecord

__all__ = ["UnlearningEvaluator", "UnlearningRecord"]
