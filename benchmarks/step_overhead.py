"""Host overhead of a training step: a bare PyTorch loop, Lightning's floor, and this package.

    python -m benchmarks.step_overhead --out DIR [--preset digits] [--width N] [--epochs 10] [--repeats 5]
        [--device cpu|cuda] [--streams full remain hybrid]

For each training stream, ``full`` (the original model, ``ClassifierModule``), ``remain``
(``FTModule``) and ``hybrid`` (``NatMUModule``), three sides do the same work per step on
the same model, batch, data, forget set, hybrid plan, augmentation and optimiser:

- ``bare_ms``: a plain PyTorch loop over the uint8 training tensor: per epoch a seeded
  permutation; per step index the images, crop and flip the plain rows, mix the hybrid
  rows (``natmu_lightning.natmu.hybrids.mix``), scale to [0, 1], forward, cross-entropy,
  backward, optimiser and scheduler step.
- ``plain_lightning_ms``: a minimal LightningModule whose ``training_step`` does the bare
  loop's per-step work on batches of positions (whole batches from ``__getitems__``) and
  logs nothing: Lightning's own floor.
- ``lightning_ms``: ``Trainer.fit`` with this package's module and
  ``ForgetRemainDataModule``.

Both Lightning sides run the same trainer, as a ``natmu-lightning fit`` run configures it
(CSV logger, progress bar), without checkpointing and without the evaluator (saving and
evaluating are per-epoch work, measured in ``benchmarks/speed.py``, ``eval_fraction``): their
difference is this package's own work per step.

The first epoch is not timed. A side's time per step is the wall time from the end of the
first epoch to the end of the run over the steps in between, so per-epoch work (new
permutations, loader rebuilds, epoch-end hooks) is spread over the steps. The sides run in
``--repeats`` alternated rounds and each keeps its fastest round (the one least disturbed by
other work on a shared machine, where identical rounds differ by up to a third). On a CPU
every round also records its median step. Writes ``step_overhead.json`` after each stream (a
command stopped by a time limit keeps the streams it finished): per stream ``bare_ms``,
``plain_lightning_ms``, ``lightning_ms``, the ratios, our part
(``lightning_ms - plain_lightning_ms``) over ``bare_ms``, and every round.

``--width N`` builds the preset's backbone with ``width=N`` (the digits SmallCNN has 32):
with a narrow network the arithmetic nearly vanishes and the differences are the host's
work alone, as on a fast GPU where the host is the bound.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python benchmarks/step_overhead.py` works too
from benchmarks.host import device_name  # noqa: E402
from benchmarks.presets import PRESETS, Preset, build  # noqa: E402
from benchmarks.speed import alternated  # noqa: E402
from natmu_lightning.data import ForgetRemainDataModule, RandomForget  # noqa: E402
from natmu_lightning.data.transforms import random_crop_flip  # noqa: E402
from natmu_lightning.io import atomic_write_json  # noqa: E402
from natmu_lightning.methods import ClassifierModule, FTModule, NatMUModule  # noqa: E402
from natmu_lightning.methods.base import BackboneModule  # noqa: E402
from natmu_lightning.natmu import hybrids  # noqa: E402

STREAMS = ("full", "remain", "hybrid")
SIDES = ("bare", "plain_lightning", "lightning")
TARGET_RATIO = 1.3
"""``lightning_ms`` at most this times ``bare_ms`` ..."""
FLOOR_RATIO = 1.2
"""... unless Lightning's floor alone is above this times ``bare_ms``; then ..."""
OUR_PART = 0.1
"""... our part (``lightning_ms - plain_lightning_ms``) at most this times ``bare_ms``."""


class StepWork:
    """The per-step work every side shares, over the whole uint8 training tensor on ``device``.

    Positions ``0 .. num_plain - 1`` are the plain rows (training indices ``plain``),
    the rest are rows of the hybrid plan (empty for the ``full`` and ``remain`` streams).
    """

    def __init__(
        self,
        images: Tensor,
        targets: Tensor,
        plain: Tensor,
        plan: dict[str, Tensor] | None,
        masks: Tensor,
        padding: int,
        flip: bool,
        device: torch.device,
    ) -> None:
        self.images, self.targets = images.to(device), targets.to(device)
        self.plain = plain.to(device)
        self.num_plain = plain.numel()
        empty = torch.empty(0, dtype=torch.long)
        plan = plan or {"forget_index": empty, "remain_index": empty, "mask_id": empty, "label": empty}
        self.plan = {key: value.long().to(device) for key, value in plan.items()}
        self.masks, self.padding, self.flip, self.device = masks.to(device), padding, flip, device
        self.generator = torch.Generator().manual_seed(0)

    def __len__(self) -> int:
        return self.num_plain + self.plan["label"].numel()

    def batch(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """Float images in [0, 1] and targets for the stream rows at ``positions``."""
        positions = positions.to(self.device)
        is_hybrid = positions >= self.num_plain
        plain_rows, hybrid_rows = positions[~is_hybrid], positions[is_hybrid] - self.num_plain
        index = self.plain[plain_rows]
        images = torch.cat(
            [
                random_crop_flip(self.images[index], self.padding, self.flip, self.generator),
                hybrids.mix(
                    self.images[self.plan["forget_index"][hybrid_rows]],
                    self.images[self.plan["remain_index"][hybrid_rows]],
                    self.masks[self.plan["mask_id"][hybrid_rows]].unsqueeze(1),
                ),
            ]
        )
        targets = torch.cat([self.targets[index], self.plan["label"][hybrid_rows]])
        return images.float().div_(255), targets


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepClock:
    """Times the steps after step ``start_step`` (the first epoch's last): their mean (the wall
    time to the run's end over the steps, per-epoch work included) and, on a CPU, the median
    step (on a GPU one step cannot be timed without synchronising)."""

    def __init__(self, device: torch.device, start_step: int) -> None:
        self.device, self.start_step = device, start_step
        self.marks: list[float] = []
        self.steps = 0

    def step_done(self, step: int) -> None:
        """Call after step number ``step`` (counted from 1) finished its optimiser update."""
        if step == self.start_step:
            synchronize(self.device)
            self.marks = [time.perf_counter()]
        elif step > self.start_step and self.device.type == "cpu":
            self.marks.append(time.perf_counter())
        self.steps = step

    def timing(self) -> dict[str, float]:
        """``mean_ms`` and, on a CPU, ``median_ms`` per step."""
        synchronize(self.device)
        end = time.perf_counter()
        if not self.marks or self.steps <= self.start_step:
            raise RuntimeError("the run ended before the timed steps: raise --epochs")
        result = {"mean_ms": 1000 * (end - self.marks[0]) / (self.steps - self.start_step)}
        if self.device.type == "cpu":
            result["median_ms"] = 1000 * statistics.median(b - a for a, b in zip(self.marks, self.marks[1:]))
        return result


def steps_per_epoch(rows: int, batch_size: int) -> int:
    return -(-rows // batch_size)


def time_bare(
    work: StepWork, model: nn.Module, recipe_module: BackboneModule, batch_size: int, epochs: int
) -> dict[str, float]:
    per_epoch = steps_per_epoch(len(work), batch_size)
    optimizer = recipe_module.recipe.optimizer_for(model.parameters())  # type: ignore[union-attr]
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        recipe_module.recipe.lr_factor(per_epoch * epochs, per_epoch),  # type: ignore[union-attr]
    )
    clock, step = StepClock(work.device, per_epoch), 0
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(work), generator=torch.Generator().manual_seed(epoch))
        for positions in order.split(batch_size):
            images, targets = work.batch(positions)
            loss = nn.functional.cross_entropy(model(images), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            clock.step_done(step)
    return clock.timing()


class Positions(Dataset):
    """Stream positions, gathered a whole batch at a time."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitems__(self, positions: Sequence[int]) -> Tensor:
        return torch.as_tensor(positions)


def whole_batch(batch: Tensor) -> Tensor:
    return batch


class ClockCallback(pl.Callback):
    def __init__(self, clock: StepClock) -> None:
        self.clock = clock

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self.clock.step_done(trainer.global_step)


class PlainModule(pl.LightningModule):
    """Lightning's floor: the bare loop's per-step work in ``training_step``, nothing else."""

    def __init__(self, work: StepWork, model: nn.Module, recipe_module: BackboneModule, batch_size: int) -> None:
        super().__init__()
        # the recipe only: a LightningModule attribute would become a child module of this one
        self.work, self.model, self.recipe, self.batch_size = work, model, recipe_module.recipe, batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(Positions(len(self.work)), batch_size=self.batch_size, shuffle=True, collate_fn=whole_batch)

    def training_step(self, positions: Tensor, batch_idx: int) -> Tensor:
        images, targets = self.work.batch(positions)
        return nn.functional.cross_entropy(self.model(images), targets)

    def configure_optimizers(self) -> Any:
        recipe = self.recipe
        optimizer = recipe.optimizer_for(self.model.parameters())  # type: ignore[union-attr]
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = max(total // max(self.trainer.max_epochs or 1, 1), 1)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, recipe.lr_factor(total, per_epoch))  # type: ignore[union-attr]
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def accelerator(device: torch.device) -> str:
    return "gpu" if device.type == "cuda" else "cpu"


def timed_trainer(device: torch.device, epochs: int, root: Path, clock: StepClock) -> pl.Trainer:
    """The trainer of both Lightning sides, as a ``natmu-lightning fit`` run configures it (CSV
    logger, progress bar) but without checkpointing and without Lightning's validation loop."""
    return pl.Trainer(
        accelerator=accelerator(device),
        devices=1,
        max_epochs=epochs,
        num_sanity_val_steps=0,
        logger=pl.loggers.CSVLogger(root),
        enable_checkpointing=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=root,
        callbacks=[ClockCallback(clock)],
    )


def time_plain_lightning(
    work: StepWork, model: nn.Module, recipe_module: BackboneModule, batch_size: int, epochs: int, root: Path
) -> dict[str, float]:
    clock = StepClock(work.device, steps_per_epoch(len(work), batch_size))
    timed_trainer(work.device, epochs, root, clock).fit(PlainModule(work, model, recipe_module, batch_size))
    return clock.timing()


def time_lightning(
    module: BackboneModule, dm: ForgetRemainDataModule, rows: int, epochs: int, device: torch.device, root: Path
) -> dict[str, float]:
    clock = StepClock(device, steps_per_epoch(rows, dm.batch_size))
    timed_trainer(device, epochs, root, clock).fit(module, datamodule=dm)
    return clock.timing()


def datamodule(preset: Preset, stream: str) -> ForgetRemainDataModule:
    return ForgetRemainDataModule(
        source=preset.source(),
        forget=RandomForget(0.1),
        stream=stream,
        batch_size=preset.batch_size,
        crop_padding=preset.crop_padding,
        horizontal_flip=preset.horizontal_flip,
        natmu=preset.hybrids,
    )


Backbones = Callable[[], nn.Module]


def backbones(preset: Preset, width: int | None) -> Backbones:
    """Builds the preset's backbone, with ``width`` when given."""
    spec = copy.deepcopy(preset.original["model"]["init_args"]["backbone"])
    if width is not None:
        spec["init_args"] = {**(spec.get("init_args") or {}), "width": width}
    return lambda: build(spec)


def make_module(preset: Preset, backbone: Backbones, stream: str, original: Path) -> BackboneModule:
    pl.seed_everything(0, verbose=False)
    if stream == "full":
        return ClassifierModule(backbone(), stream="full", recipe=preset.classifier_recipe)
    if stream == "remain":
        return FTModule(backbone(), original_ckpt=str(original))
    return NatMUModule(backbone(), original_ckpt=str(original), recipe=preset.natmu_recipe)


def fresh_model(backbone: Backbones, original: Path, device: torch.device) -> nn.Module:
    model = backbone()
    model.load_state_dict(torch.load(original, weights_only=True))
    return model.to(device)


def measure_stream(
    preset: Preset, backbone: Backbones, stream: str, args: argparse.Namespace, device: torch.device
) -> dict[str, Any]:
    original = args.out / "original.pt"
    # The stream's forget set and plan, resolved once as a fit would (the plan from the original).
    resolved = datamodule(preset, stream)
    probe = make_module(preset, backbone, stream, original)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        max_epochs=args.epochs,
        default_root_dir=args.out,
        enable_progress_bar=False,
    )
    trainer.strategy.connect(probe)
    resolved.trainer = trainer
    resolved.setup("fit")
    resolved.prepare_for("fit", probe.training_needs(), probe)  # what the module's setup does in a fit
    data = resolved._loaded().train
    plain = resolved._stream_indices() if stream == "full" else resolved.remain_indices
    assert plain is not None
    images = data.images if isinstance(data.images, Tensor) else data.images[torch.arange(len(data.images))]
    masks = hybrids.gradual_masks(images.shape[-2], images.shape[-1], float(preset.hybrids.delta))
    work = StepWork(
        images,
        data.targets,
        plain,
        resolved.hybrid_plan,
        masks,
        preset.crop_padding,
        preset.horizontal_flip,
        device,
    )
    rows = len(work)

    def bare() -> dict[str, float]:
        return time_bare(work, fresh_model(backbone, original, device), probe, preset.batch_size, args.epochs)

    def plain_lightning() -> dict[str, float]:
        model = fresh_model(backbone, original, device)
        return time_plain_lightning(work, model, probe, preset.batch_size, args.epochs, args.out / "plain")

    def ours() -> dict[str, float]:
        return time_lightning(
            make_module(preset, backbone, stream, original),
            datamodule(preset, stream),
            rows,
            args.epochs,
            device,
            args.out / f"lightning_{stream}",
        )

    rounds = dict(zip(SIDES, alternated(args.repeats, bare, plain_lightning, ours)))
    best = {side: min(r["mean_ms"] for r in side_rounds) for side, side_rounds in rounds.items()}
    bare_t, plain_t, ours_t = best["bare"], best["plain_lightning"], best["lightning"]
    result = {
        "rows_per_epoch": rows,
        "steps_per_epoch": steps_per_epoch(rows, preset.batch_size),
        "timed_steps": steps_per_epoch(rows, preset.batch_size) * (args.epochs - 1),
        "bare_ms": bare_t,
        "plain_lightning_ms": plain_t,
        "lightning_ms": ours_t,
        "lightning_over_bare": ours_t / bare_t,
        "floor_over_bare": plain_t / bare_t,
        "our_part_over_bare": (ours_t - plain_t) / bare_t,
        "rounds": rounds,
    }
    result["target_met"] = meets_target(result)
    return result


def meets_target(row: dict[str, float]) -> bool:
    """``lightning_ms <= 1.3 bare_ms``; where the floor alone is above 1.2x, our part <= 0.1x."""
    if row["floor_over_bare"] > FLOOR_RATIO:
        return row["our_part_over_bare"] <= OUR_PART
    return row["lightning_over_bare"] <= TARGET_RATIO


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="digits")
    parser.add_argument("--width", type=int, default=None, help="the backbone's width (default: the preset's)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs per side; the first is not timed")
    parser.add_argument("--repeats", type=int, default=5, help="alternated rounds; each side keeps its fastest")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--streams", nargs="+", choices=STREAMS, default=list(STREAMS))
    args = parser.parse_args(argv)
    if args.epochs < 2 or args.repeats < 1:
        parser.error("--epochs must be at least 2 and --repeats at least 1")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA device")
    preset = PRESETS[args.preset]
    args.out.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(0, verbose=False)
    backbone = backbones(preset, args.width)
    torch.save(backbone().state_dict(), args.out / "original.pt")  # any weights of the right shape

    streams: dict[str, Any] = {}
    result = {
        "preset": preset.name,
        "batch_size": preset.batch_size,
        "backbone": type(backbone()).__name__,
        "width": args.width,
        "epochs": args.epochs,
        "repeats": args.repeats,
        "device": device_name(cuda=device.type == "cuda"),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "pytorch_lightning": pl.__version__,
        "command": "python -m benchmarks.step_overhead " + " ".join(sys.argv[1:] if argv is None else argv),
        "target": {"lightning_over_bare": TARGET_RATIO, "floor_over_bare": FLOOR_RATIO, "our_part_over_bare": OUR_PART},
        "streams_requested": list(args.streams),  # more than "streams" holds: the command was cut short
        "streams": streams,
    }
    for number, stream in enumerate(args.streams, 1):
        print(f"[{number}/{len(args.streams)}] {stream} stream", flush=True)
        streams[stream] = measure_stream(preset, backbone, stream, args, device)
        row = streams[stream]
        print(
            f"    bare {row['bare_ms']:.3f} ms, plain Lightning {row['plain_lightning_ms']:.3f} ms, "
            f"ours {row['lightning_ms']:.3f} ms: {row['lightning_over_bare']:.2f}x bare, our part "
            f"{row['our_part_over_bare']:.2f}x bare, target {'met' if row['target_met'] else 'NOT met'}",
            flush=True,
        )
        # written after each stream: a command stopped by a time limit keeps the streams it finished
        atomic_write_json(args.out / "step_overhead.json", result)
    return result


if __name__ == "__main__":
    main()
