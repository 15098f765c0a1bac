"""``ChannelsLast``: run a convolutional backbone in the channels-last (NHWC) memory format."""

from __future__ import annotations

import pytorch_lightning as pl
import torch


class ChannelsLast(pl.Callback):
    """Keep the module's 4-D weights in ``torch.channels_last`` while it fits.

    cuDNN's convolutions with tensor cores (``bf16-mixed`` or ``16-mixed`` on a recent GPU)
    work in NHWC: in the default NCHW layout each convolution transposes its input and
    output. PyTorch gives a convolution whose weight is channels-last a channels-last output
    whatever its input's layout, so converting the weights is enough: batches stay as the
    datamodule makes them, and every later layer follows. Whether it gains is measured per
    device (``python -m benchmarks.gpu_fast``). A step's values agree with the NCHW run's to
    rounding (other kernels sum in another order), not to the bit, and over a whole fit those
    differences grow as between two CPU generations: the digits NatMU config's forget
    accuracy moved by 2.3 points on a CPU, about its spread over seeds.

    The weights are converted when the fit starts (``on_fit_start``): after the module's
    ``setup``, so the forget request and NatMU's hybrid plan are resolved with the NCHW
    weights as without this callback, and after Lightning moved the module to its device.
    They go back to the contiguous layout in ``teardown``, after ``on_fit_end`` (the
    evaluator's final evaluation runs channels-last too), or when the fit fails: the module
    a fit leaves behind is as it was. Checkpoints written during the fit hold channels-last
    tensors; ``load_state_dict`` copies them into any layout. Copies of the model held
    outside the module's children (SCRUB's and Bad Teacher's frozen teachers, NegGrad+'s
    anchor weights) keep the NCHW layout: correct, without the gain. Under DDP the weights
    change layout after DDP wrapped the module; PyTorch may warn once that gradient strides
    do not match its buckets (not measured on several GPUs).

    Example:
        >>> import torch
        >>> from natmu_lightning import ClassifierModule, SmallCNN
        >>> module = ClassifierModule(SmallCNN())
        >>> ChannelsLast().on_fit_start(None, module)  # what the trainer calls when the fit starts
        >>> module.backbone.features[1][0].weight.is_contiguous(memory_format=torch.channels_last)
        True
        >>> module(torch.rand(2, 1, 8, 8)).shape  # NCHW batches as before
        torch.Size([2, 10])
    """

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.to(memory_format=torch.channels_last)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        pl_module.to(memory_format=torch.contiguous_format)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        pl_module.to(memory_format=torch.contiguous_format)  # Lightning skips teardown after an error
