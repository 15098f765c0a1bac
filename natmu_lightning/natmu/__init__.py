"""NatMU in one place: the method's module, its plan and batches, and the pure math.

- :mod:`~natmu_lightning.natmu.hybrids`: gradual masks, the pairing plan, mixing (torch only).
- :mod:`~natmu_lightning.natmu.batches`: :class:`HybridBatches`, the hybrid rows of a training
  stream (the plan drawn from the original model; each batch's rows mixed on its device).
- :mod:`~natmu_lightning.natmu.module`: :class:`NatMUModule`, the LightningModule.

``NatMUModule`` is loaded on first use: the datamodule imports the batches, and the module
imports the package's method base, which imports the data.
"""

from __future__ import annotations

from typing import Any

from natmu_lightning.natmu.batches import HybridBatches
from natmu_lightning.natmu.hybrids import HybridOptions

__all__ = ["HybridBatches", "HybridOptions", "NATMU_RECIPE", "NatMUModule"]


def __getattr__(name: str) -> Any:
    if name in ("NatMUModule", "NATMU_RECIPE"):
        from natmu_lightning.natmu import module

        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
