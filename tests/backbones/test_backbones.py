"""Tests for natmu_lightning.backbones."""

from __future__ import annotations

import inspect
import typing

import pytest
import torch
from torch import nn

from natmu_lightning.backbones import (
    CIFAR100_MEAN,
    CIFAR100_STD,
    DIGITS_MEAN,
    DIGITS_STD,
    VGG16BN,
    Normalize,
    ResNet18,
    ResNet34,
    SmallCNN,
)

BACKBONES = [ResNet18, ResNet34, VGG16BN, SmallCNN]
GREY = {"in_channels": 1, "mean": (0.5,), "std": (0.5,)}
RGB = {"in_channels": 3, "mean": CIFAR100_MEAN, "std": CIFAR100_STD}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("cls", BACKBONES)
@pytest.mark.parametrize("channels", [GREY, RGB], ids=["1ch", "3ch"])
def test_output_shape_32(cls: type[nn.Module], channels: dict) -> None:
    model = cls(num_classes=7, **channels)
    out = model(torch.rand(2, channels["in_channels"], 32, 32))
    assert out.shape == (2, 7)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_resnet34_64x64() -> None:
    assert ResNet34(num_classes=100)(torch.rand(2, 3, 64, 64)).shape == (2, 100)


@pytest.mark.parametrize("size", [8, 28])
@pytest.mark.parametrize("channels", [GREY, RGB], ids=["1ch", "3ch"])
def test_small_cnn_small_inputs(size: int, channels: dict) -> None:
    model = SmallCNN(num_classes=10, **channels)
    assert model(torch.rand(3, channels["in_channels"], size, size)).shape == (3, 10)


def test_named_heads() -> None:
    assert ResNet18(num_classes=5).fc.out_features == 5
    assert ResNet34(num_classes=5).fc.out_features == 5
    assert VGG16BN(num_classes=5).classifier.out_features == 5
    assert SmallCNN(num_classes=5, width=8).fc.in_features == 16


def test_parameter_counts() -> None:
    assert n_params(ResNet18(num_classes=10)) == 11_173_962
    assert n_params(VGG16BN(num_classes=10)) == 14_728_266
    assert n_params(ResNet34(num_classes=10)) == 21_282_122


def test_digits_constants_match_data() -> None:
    load_digits = pytest.importorskip("sklearn.datasets").load_digits
    pixels = torch.tensor(load_digits().images / 16.0)
    assert DIGITS_MEAN == (round(pixels.mean().item(), 4),)
    assert DIGITS_STD == (round(pixels.std(unbiased=False).item(), 4),)


def test_normalize() -> None:
    norm = Normalize(mean=(0.1, 0.2, 0.3), std=(0.5, 0.5, 0.25))
    x = torch.rand(2, 3, 4, 4)
    expected = (x - torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)) / torch.tensor([0.5, 0.5, 0.25]).view(1, 3, 1, 1)
    torch.testing.assert_close(norm(x), expected)
    assert norm.state_dict() == {}
    assert {name for name, _ in norm.named_buffers()} == {"mean", "std"}
    with pytest.raises(ValueError, match="same length"):
        Normalize(mean=(0.1, 0.2), std=(0.5,))
    with pytest.raises(ValueError, match="std"):
        Normalize(mean=(0.1,), std=(0.0,))


@pytest.mark.parametrize("cls", BACKBONES)
def test_state_dict_round_trip(cls: type[nn.Module]) -> None:
    torch.manual_seed(0)
    src = cls(num_classes=10)
    in_channels = src.normalize.mean.shape[1]
    x = torch.rand(4, in_channels, 32, 32)
    src.train()
    src(x)  # move BatchNorm running statistics away from their defaults
    state = src.state_dict()
    assert not any("normalize" in key for key in state)
    assert not any(key.endswith(("mean", "std")) and "running" not in key for key in state)

    torch.manual_seed(1)
    dst = cls(num_classes=10)
    dst.load_state_dict(state, strict=True)
    src.eval()
    dst.eval()
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))


@pytest.mark.parametrize("cls", BACKBONES)
@pytest.mark.parametrize(
    ("kwargs", "arg"),
    [
        ({"num_classes": 1}, "num_classes"),
        ({"in_channels": 0, "mean": (), "std": ()}, "in_channels"),
        ({"in_channels": 2, "mean": (0.5,), "std": (0.5, 0.5)}, "mean"),
        ({"in_channels": 1, "mean": (0.5,), "std": (0.5, 0.5)}, "std"),
        ({"in_channels": 1, "mean": (0.5,), "std": (-1.0,)}, "std"),
    ],
)
def test_bad_arguments(cls: type[nn.Module], kwargs: dict, arg: str) -> None:
    with pytest.raises(ValueError, match=arg):
        cls(**kwargs)


@pytest.mark.parametrize("cls", [SmallCNN, ResNet18, ResNet34])
def test_bad_width(cls: type[nn.Module]) -> None:
    with pytest.raises(ValueError, match="width"):
        cls(width=0)


def test_narrow_resnet() -> None:
    """width scales every stage; the default is the published network, key for key."""
    narrow = ResNet18(num_classes=10, width=8)
    assert narrow(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert narrow.conv1.out_channels == 8 and narrow.layer4[0].conv1.out_channels == 64
    assert narrow.fc.in_features == 64
    assert n_params(narrow) == 176_402
    assert ResNet18(num_classes=10, width=64).state_dict().keys() == ResNet18(num_classes=10).state_dict().keys()


@pytest.mark.parametrize("cls", BACKBONES)
def test_constructor_fully_annotated(cls: type[nn.Module]) -> None:
    params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    hints = typing.get_type_hints(cls.__init__)
    assert params[:4] == ["num_classes", "in_channels", "mean", "std"]
    assert set(params) | {"return"} == set(hints)


def test_jsonargparse_class_path() -> None:
    jsonargparse = pytest.importorskip("jsonargparse")
    parser = jsonargparse.ArgumentParser()
    parser.add_argument("--model", type=nn.Module)
    cfg = parser.parse_object(
        {
            "model": {
                "class_path": "natmu_lightning.backbones.SmallCNN",
                "init_args": {"num_classes": 4, "width": 8, "mean": [0.3], "std": [0.4]},
            }
        }
    )
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    model = instantiate(cfg).model
    assert isinstance(model, SmallCNN)
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 4)


def test_small_cnn_memorises_digits() -> None:
    load_digits = pytest.importorskip("sklearn.datasets").load_digits
    digits = load_digits()
    x = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(digits.target)
    torch.manual_seed(0)
    model = SmallCNN(num_classes=10)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    acc = 0.0
    for _ in range(40):
        model.train()
        for idx in torch.randperm(len(x)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            acc = (model(x).argmax(1) == y).float().mean().item()
        if acc == 1.0:
            break
    assert acc == 1.0
