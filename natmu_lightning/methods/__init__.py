"""LightningModules: the original/Retrain trainer, NatMU and the baselines it is judged against."""

from natmu_lightning.methods.bad_teacher import BadTeacherModule
from natmu_lightning.methods.base import BackboneModule, UnlearningModule
from natmu_lightning.methods.classifier import ClassifierModule
from natmu_lightning.methods.ft import FTModule
from natmu_lightning.methods.ga import GAModule
from natmu_lightning.methods.l1_sparse import L1SparseModule
from natmu_lightning.methods.neggrad import NegGradPlusModule
from natmu_lightning.methods.recipe import Recipe
from natmu_lightning.methods.rl import RLModule
from natmu_lightning.methods.salun import SalUnModule
from natmu_lightning.methods.scrub import SCRUBModule
from natmu_lightning.methods.ssd import SSDModule
from natmu_lightning.natmu.module import NatMUModule

__all__ = [
    "BadTeacherModule",
    "BackboneModule",
    "UnlearningModule",
    "ClassifierModule",
    "FTModule",
    "GAModule",
    "L1SparseModule",
    "NatMUModule",
    "Recipe",
    "NegGradPlusModule",
    "RLModule",
    "SalUnModule",
    "SCRUBModule",
    "SSDModule",
]
