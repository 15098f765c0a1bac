"""Callbacks: the unlearning evaluator, the unlearning record and the channels-last layout."""

from natmu_lightning.callbacks.channels_last import ChannelsLast
from natmu_lightning.callbacks.evaluator import UnlearningEvaluator
from natmu_lightning.callbacks.record import UnlearningRecord

__all__ = ["ChannelsLast", "UnlearningEvaluator", "UnlearningRecord"]
