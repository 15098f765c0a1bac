"""``ChannelsLast``: channels-last weights from setup to teardown, on an accelerator's device
timeline replayed on the CPU, with the values of the NCHW fit up to rounding."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from natmu_lightning.callbacks import ChannelsLast, UnlearningEvaluator
from tests.accelerator_timeline import AcceleratorTimeline
from tests.tiny_runs import make_dm, make_model, quiet_trainer


def _conv_weights_channels_last(module: pl.LightningModule) -> list[bool]:
    """Of each conv weight with more than one input channel (with one, both layouts are the same)."""
    return [
        p.is_contiguous(memory_format=torch.channels_last)
        for p in module.parameters()
        if p.dim() == 4 and p.shape[1] > 1
    ]


class LayoutProbe(pl.Callback):
    """Records the weights' layout (and a conv output's) at each training step and when the fit ends."""

    def __init__(self) -> None:
        self.seen: dict[str, list[bool]] = {}

    def on_train_start(self, trainer, pl_module) -> None:
        def record_output(conv, inputs, output) -> None:
            if conv.training:
                self.seen.setdefault("conv_output", []).append(output.is_contiguous(memory_format=torch.channels_last))

        pl_module.backbone.features[1][0].register_forward_hook(record_output)  # 4 channels in

    def setup(self, trainer, pl_module, stage) -> None:  # the module's setup (forget set, hybrid plan) comes next
        self.seen["setup"] = _conv_weights_channels_last(pl_module)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.setdefault("step", []).extend(_conv_weights_channels_last(pl_module))

    def on_fit_end(self, trainer, pl_module) -> None:  # after the module went back to the CPU
        self.seen["fit_end"] = _conv_weights_channels_last(pl_module)


def _fit(tmp_path, *callbacks: pl.Callback) -> pl.LightningModule:
    model = make_model()
    trainer = quiet_trainer(tmp_path, max_epochs=2, strategy=AcceleratorTimeline(), callbacks=list(callbacks))
    trainer.fit(model, datamodule=make_dm())
    return model


def test_weights_are_channels_last_through_the_fit_and_contiguous_after(tmp_path):
    probe = LayoutProbe()
    model = _fit(tmp_path / "cl", ChannelsLast(), UnlearningEvaluator(every_n_epochs=1), probe)
    assert probe.seen["setup"] and not any(probe.seen["setup"]), "converted before the module's setup"
    assert probe.seen["step"] and all(probe.seen["step"])
    assert all(probe.seen["conv_output"]), "a channels-last weight gives a channels-last output"
    assert probe.seen["fit_end"] and all(probe.seen["fit_end"])  # the final evaluation too
    assert not any(_conv_weights_channels_last(model))
    assert all(p.is_contiguous() for p in model.parameters())

    plain_probe = LayoutProbe()
    plain = _fit(tmp_path / "plain", plain_probe)
    assert not any(plain_probe.seen["step"]) and not any(plain_probe.seen["conv_output"])
    for (name, a), b in zip(model.state_dict().items(), plain.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_a_failed_fit_leaves_the_module_contiguous(tmp_path):
    """Lightning skips the callbacks' teardown when a fit raises: ``on_exception`` restores the layout."""
    model = make_model()
    steps = []

    def failing_step(batch, batch_idx):
        steps.append(_conv_weights_channels_last(model))
        raise RuntimeError("a step failed")

    model.training_step = failing_step
    trainer = quiet_trainer(tmp_path, max_epochs=1, strategy=AcceleratorTimeline(), callbacks=[ChannelsLast()])
    with pytest.raises(RuntimeError, match="a step failed"):
        trainer.fit(model, datamodule=make_dm())
    assert steps and all(steps[0])
    assert not any(_conv_weights_channels_last(model)) and all(p.is_contiguous() for p in model.parameters())
