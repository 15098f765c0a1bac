"""A CPU strategy that replays an accelerator's device timeline (Lightning 2.x).

On a GPU, Lightning runs the ``setup`` hooks before ``strategy.setup`` moves the module
to ``root_device`` (while faking ``LightningModule.device`` to that device), and
``on_fit_end`` after ``strategy.teardown`` moved it back to the CPU. This strategy
trains on the CPU but reports ``root_device`` as ``meta`` in exactly those two windows,
so any code that sends inputs to "the accelerator" instead of to the model's own
device fails on the CPU as it would on a GPU.

Usable from YAML / the CLI: ``--trainer.strategy tests.accelerator_timeline.AcceleratorTimeline``.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.strategies import SingleDeviceStrategy

ELSEWHERE = torch.device("meta")


class AcceleratorTimeline(SingleDeviceStrategy):
    """Single-process CPU training whose ``root_device`` is ``meta`` outside the placed window."""

    def __init__(self) -> None:
        super().__init__(device=torch.device("cpu"))
        self.placed = False

    @property
    def root_device(self) -> torch.device:
        return self._root_device if self.placed else ELSEWHERE

    def setup_environment(self) -> None:
        self.placed = True  # the accelerator checks it can use root_device
        super().setup_environment()
        self.placed = False

    def setup(self, trainer: pl.Trainer) -> None:
        self.placed = True  # from here to teardown the module sits on the (CPU) device
        super().setup(trainer)

    def teardown(self) -> None:
        super().teardown()
        self.placed = False
