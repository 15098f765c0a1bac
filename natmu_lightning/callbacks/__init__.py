"""Callbacks: the unlearning evaluator."""

from natmu_lightning.callbacks.evaluator import UnlearningEvaluator

__all__ = ["UnlearningEvaluator"]
