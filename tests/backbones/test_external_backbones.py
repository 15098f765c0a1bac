"""Backbones from torchvision and timm, through a YAML ``class_path`` and through Python.

``timm`` is the optional ``backbones`` extra (``.ci/run`` installs it); its tests skip
without it. Nothing is downloaded: torchvision's builders default to ``weights=None`` and
timm's ``pretrained`` is False.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from natmu_lightning.cli import main
from natmu_lightning.data import ForgetRemainDataModule, SyntheticImages
from natmu_lightning.methods import NatMUModule
from tests.tiny_runs import quiet_trainer

NUM_CLASSES = 3
SOURCE = {"num_classes": NUM_CLASSES, "train_per_class": 8, "test_per_class": 4}
#: library -> the backbone as a YAML class_path (timm takes num_classes through **kwargs: dict_kwargs).
YAML_BACKBONES = {
    "torchvision": {"class_path": "torchvision.models.resnet18", "init_args": {"num_classes": NUM_CLASSES}},
    "timm": {
        "class_path": "timm.create_model",
        "init_args": {"model_name": "resnet18", "pretrained": False},
        "dict_kwargs": {"num_classes": NUM_CLASSES},
    },
}


def build(library: str) -> torch.nn.Module:
    """The same backbone built in Python."""
    module = pytest.importorskip(library)
    if library == "timm":
        return module.create_model("resnet18", pretrained=False, num_classes=NUM_CLASSES)
    return module.models.resnet18(num_classes=NUM_CLASSES)


@pytest.mark.usefixtures("in_tmp_path")
@pytest.mark.parametrize("library", YAML_BACKBONES)
def test_a_library_backbone_trains_from_a_yaml_class_path(tmp_path: Path, library: str) -> None:
    pytest.importorskip(library)
    config = {
        "model": {
            "class_path": "natmu_lightning.ClassifierModule",
            "init_args": {"backbone": YAML_BACKBONES[library], "stream": "full"},
        },
        "data": {
            "source": {"class_path": "natmu_lightning.SyntheticImages", "init_args": SOURCE},
            "batch_size": 8,
        },
        "trainer": {
            "accelerator": "cpu",
            "max_steps": 1,
            "logger": False,
            "enable_checkpointing": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "limit_val_batches": 0,
        },
    }
    Path("backbone.yaml").write_text(yaml.safe_dump(config))  # the CLI saves its own config.yaml
    cli = main(["fit", "--config", "backbone.yaml"])
    assert type(cli.model.backbone).__module__.split(".")[0] == library
    assert cli.trainer.global_step == 1


@pytest.mark.parametrize("library", YAML_BACKBONES)
def test_natmu_unlearns_a_library_model_from_its_state_dict(tmp_path: Path, library: str) -> None:
    torch.manual_seed(0)
    original = build(library)
    torch.save(original.state_dict(), tmp_path / "original.pt")
    natmu = NatMUModule(build(library), original_ckpt=str(tmp_path / "original.pt"), recipe={"lr": 1e-3})
    for name, tensor in original.state_dict().items():  # the original weights, loaded strictly
        assert torch.equal(natmu.backbone.state_dict()[name], tensor), name
    datamodule = ForgetRemainDataModule(source=SyntheticImages(**SOURCE), batch_size=8, natmu={"k": 2})
    trainer = quiet_trainer(tmp_path, max_steps=2)
    trainer.fit(natmu, datamodule=datamodule)
    assert trainer.global_step == 2 and datamodule.hybrid_plan is not None
    moved = any(not torch.equal(natmu.backbone.state_dict()[k], v) for k, v in original.state_dict().items())
    assert moved, "two NatMU steps left every weight unchanged"
