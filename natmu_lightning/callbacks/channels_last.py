"""``ChannelsLast``: run a convolutional backbone in the channels-last (NHWC) memory format."""

from __future__ import annotations

import pytorch_lightning as pl
import torch


class ChannelsLast(pl.Callback):
    """Keep the module's 4-D weights in ``torch.channels_last`` while the trainer runs it.

    cuDNN's convolutions with tensor cores (``bf16-mixed`` or ``16-mixed`` on a recent GPU)
    work in NHWC: in the default NCHW layout each convolution transposes its input and
    output. PyTorch gives a convolution whose weight is channels-last a channels-last output
    whatever its input's layout, so converting the weights is enough: batches stay as the
    datamodule makes them, and every later layer follows. Whether it gains is measured per
    device (``python -m benchmarks.gpu_fast``); values agree with the NCHW run to rounding
    (other kernels sum in another order), not to the bit.

    The weights are converted in ``setup`` (Lightning then moves the module to its device,
    which keeps the layout) and back to the contiguous layout in ``teardown``, after
    ``on_fit_end``: the evaluator's final evaluation runs channels-last too, and the module
    a fit leaves behind is as it was. Checkpoints written during the fit hold channels-last
    tensors; ``load_state_dict`` copies them into any layout.

    Example:
        >>> import torch
        >>> from natmu_lightning import ClassifierModule, SmallCNN
        >>> module = ClassifierModule(SmallCNN())
        >>> ChannelsLast().setup(None, module, "fit")  # what the trainer calls first
        >>> module.backbone.features[1][0].weight.is_contiguous(memory_format=torch.channels_last)
        True
        >>> module(torch.rand(2, 1, 8, 8)).shape  # NCHW batches as before
        torch.Size([2, 10])
    """

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        pl_module.to(memory_format=torch.channels_last)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        pl_module.to(memory_format=torch.contiguous_format)
