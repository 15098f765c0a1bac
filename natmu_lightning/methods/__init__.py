"""LightningModules: the original/Retrain trainer and the unlearning methods."""

from natmu_lightning.methods.base import BackboneModule
from natmu_lightning.methods.classifier import ClassifierModule
from natmu_lightning.methods.natmu import NatMUModule

__all__ = ["BackboneModule", "ClassifierModule", "NatMUModule"]
