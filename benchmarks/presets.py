"""Speed-benchmark presets: the data, backbone, recipes and epoch counts of the quality presets,
read from their configs (``configs/digits``, ``configs/cifar10_small``: ``base.yaml`` with
``original.yaml`` and with ``natmu.yaml``), and built directly so speed.py can time each part.

The ``cifar10-small`` speed preset augments (crop + flip) although its quality configs do
not: the data-path comparison is against the authors' augmented PIL pipeline, so both
sides do that work."""

from __future__ import annotations

import copy
import importlib
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from torch import nn

from natmu_lightning.configs import composition, merged
from natmu_lightning.data import DataSource
from natmu_lightning.methods.classifier import CLASSIFIER_RECIPE
from natmu_lightning.methods.recipe import Recipe
from natmu_lightning.natmu.hybrids import HybridOptions
from natmu_lightning.natmu.module import NATMU_RECIPE

REPO = Path(__file__).resolve().parents[1]
#: The offline CIFAR-10 JPEG copy: $NATMU_CIFAR10_NPZ (as the CIFAR10JPEG source reads it), else ../shared/data.
CIFAR10_JPEG = Path(os.environ.get("NATMU_CIFAR10_NPZ") or REPO.parent / "shared" / "data" / "cifar10_jpeg.npz")


def build(spec: dict[str, Any]) -> Any:
    """The object a config's ``class_path`` / ``init_args`` describe (nested specs built first)."""
    module, _, name = spec["class_path"].rpartition(".")
    args = {
        key: build(value) if isinstance(value, dict) and "class_path" in value else value
        for key, value in (spec.get("init_args") or {}).items()
    }
    return getattr(importlib.import_module(module), name)(**args)


@dataclass(frozen=True)
class Preset:
    """One quality preset's setting for the speed benchmark.

    ``inner_source_args`` are init arguments set on the innermost data source (the CIFAR-10
    JPEG file); ``inner_source_class`` replaces that source's class (and its arguments);
    ``augment`` replaces the configs' ``(crop_padding, horizontal_flip)``.
    """

    name: str
    setting: str
    inner_source_args: tuple[tuple[str, Any], ...] = ()
    augment: tuple[int, bool] | None = None
    inner_source_class: str | None = None

    @cached_property
    def original(self) -> dict[str, Any]:
        return merged(composition(self.setting, "original"))

    @cached_property
    def natmu_config(self) -> dict[str, Any]:
        return merged(composition(self.setting, "natmu"))

    def source(self) -> DataSource:
        spec = copy.deepcopy(self.original["data"]["source"])
        inner = spec
        while "source" in (inner.get("init_args") or {}):
            inner = inner["init_args"]["source"]
        if self.inner_source_class is not None:
            inner["class_path"], inner["init_args"] = self.inner_source_class, {}
        inner["init_args"] = {**(inner.get("init_args") or {}), **dict(self.inner_source_args)}
        return build(spec)

    def backbone(self) -> nn.Module:
        return build(self.original["model"]["init_args"]["backbone"])

    @property
    def batch_size(self) -> int:
        return self.original["data"]["batch_size"]

    @property
    def crop_padding(self) -> int:
        return self.augment[0] if self.augment else self.original["data"]["crop_padding"]

    @property
    def horizontal_flip(self) -> bool:
        return self.augment[1] if self.augment else self.original["data"]["horizontal_flip"]

    @property
    def classifier_epochs(self) -> int:
        return self.original["trainer"]["max_epochs"]

    @property
    def classifier_recipe(self) -> Recipe:
        return Recipe.read(self.original["model"]["init_args"]["recipe"], CLASSIFIER_RECIPE)

    @property
    def unlearn_epochs(self) -> int:
        return self.natmu_config["trainer"]["max_epochs"]

    @property
    def natmu_recipe(self) -> Recipe:
        return Recipe.read(self.natmu_config["model"]["init_args"]["recipe"], NATMU_RECIPE)

    @property
    def hybrids(self) -> HybridOptions:
        return HybridOptions.read(self.natmu_config["data"].get("natmu") or {})


PRESETS = {
    "digits": Preset("digits", "digits"),
    "cifar10-small": Preset(
        "cifar10-small", "cifar10_small", inner_source_args=(("path", str(CIFAR10_JPEG)),), augment=(4, True)
    ),
    # The paper's setting on the offline JPEG copy (a GPU's work: benchmarks/step_overhead.py --device cuda).
    "cifar10-vgg16": Preset(
        "cifar10-vgg16",
        "cifar10_vgg16",
        inner_source_args=(("path", str(CIFAR10_JPEG)),),
        inner_source_class="natmu_lightning.CIFAR10JPEG",
    ),
}
