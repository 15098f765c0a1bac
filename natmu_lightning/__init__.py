"""natmu-lightning: NatMU machine unlearning (arXiv 2405.15495) for PyTorch Lightning."""

from natmu_lightning.backbones import VGG16BN, ResNet18, ResNet34, SmallCNN
from natmu_lightning.callbacks import UnlearningEvaluator, UnlearningRecord
from natmu_lightning.data import ForgetRemainDataModule
from natmu_lightning.methods import (
    BadTeacherModule,
    ClassifierModule,
    FTModule,
    GAModule,
    L1SparseModule,
    NatMUModule,
    NegGradPlusModule,
    Recipe,
    RLModule,
    SalUnModule,
    SCRUBModule,
    SSDModule,
)

__version__ = "0.2.0"

__all__ = [
    "BadTeacherModule",
    "FTModule",
    "GAModule",
    "L1SparseModule",
    "NegGradPlusModule",
    "RLModule",
    "SalUnModule",
    "SCRUBModule",
    "SSDModule",
    "ClassifierModule",
    "ForgetRemainDataModule",
    "NatMUModule",
    "Recipe",
    "ResNet18",
    "ResNet34",
    "SmallCNN",
    "UnlearningEvaluator",
    "UnlearningRecord",
    "VGG16BN",
    "__version__",
]
