"""A callback for the resume test: after a given epoch's checkpoint, announce it and wait to be killed."""

import time
from pathlib import Path

import pytorch_lightning as pl


class PauseAfterEpoch(pl.Callback):
    """Touch ``marker`` once epoch ``epoch`` is checkpointed, then sleep (the test kills the process)."""

    def __init__(self, epoch: int, marker: str, seconds: float = 300.0) -> None:
        self.epoch, self.marker, self.seconds = epoch, Path(marker), seconds

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # At the next epoch's start, ModelCheckpoint has already written epoch ``epoch``.
        if trainer.current_epoch == self.epoch + 1:
            self.marker.write_text(str(trainer.global_step))
            time.sleep(self.seconds)
