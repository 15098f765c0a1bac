"""Speed figures, measured side by side in one run; written to DIR/speed.json.

    python benchmarks/speed.py --out runs/speed [--preset digits|cifar10-small] [--steps N] [--repeats R]

1. ``hybrid_step_ratio``: a NatMU training step (hybrid mixing and augmentation
   included) over a plain fine-tuning step (augmentation only), same model and batch.
2. ``data_path_speedup``: samples/s of the CPU side of ForgetRemainDataModule's training
   stream (index, gather, collate, pin: what the DataLoader does before the batch reaches
   its device; ``loader_images_per_s``) over a per-sample PIL pipeline like the authors'
   (a concatenated dataset of remaining images and precomputed hybrid images, torchvision
   PIL transforms per sample), same data, batch size and worker count. Mixing and
   augmentation run on the batch's device after the copy; on a CPU-only machine that is
   this CPU, and ``data_path.with_device_work_speedup`` counts them in as well.
3. ``unlearn_vs_retrain_time``: NatMU's wall time over Retrain's on the preset.
4. ``eval_fraction``: one per-epoch evaluation with the evaluator's defaults (forget,
   remaining and test accuracy, entropy MIA; the remaining and test sets' seeded training
   subsets) over one NatMU epoch. The first evaluation of a run, which also gathers the
   splits, is ``seconds.first_evaluation``; the final one, on the whole sets and with the
   SVC and loss attacks, ``seconds.final_evaluation``.

Figures 1 and 2 are timed in ``--repeats`` alternated rounds and each side keeps its
fastest round, the one least disturbed by anything else on the machine; every round is
kept in speed.json.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import ConcatDataset, DataLoader, Dataset
from torchvision import transforms

# The repository: an uninstalled checkout runs, and `benchmarks` imports as a package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.host import cpu_name  # noqa: E402
from benchmarks.presets import PRESETS, Preset  # noqa: E402
from natmu_lightning.callbacks import UnlearningEvaluator  # noqa: E402
from natmu_lightning.data import ForgetRemainDataModule, RandomForget  # noqa: E402
from natmu_lightning.io import atomic_write_json  # noqa: E402
from natmu_lightning.methods import ClassifierModule, NatMUModule  # noqa: E402
from natmu_lightning.natmu import hybrids  # noqa: E402


def make_datamodule(preset: Preset, stream: str, num_workers: int = 0) -> ForgetRemainDataModule:
    return ForgetRemainDataModule(
        source=preset.source(),
        forget=RandomForget(0.1),
        stream=stream,
        batch_size=preset.batch_size,
        num_workers=num_workers,
        crop_padding=preset.crop_padding,
        horizontal_flip=preset.horizontal_flip,
        natmu=preset.hybrids,
    )


def attached(dm: ForgetRemainDataModule, module: pl.LightningModule, root: Path) -> ForgetRemainDataModule:
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, logger=False, default_root_dir=root, max_epochs=1, enable_progress_bar=False
    )
    trainer.strategy.connect(module)
    dm.trainer = trainer
    dm.setup("fit")
    dm.prepare_for("fit", module.training_needs(), module)  # what the module's setup does in a fit
    return dm


def time_steps(dm: ForgetRemainDataModule, model: torch.nn.Module, steps: int) -> float:
    """Seconds per training step: fetch, per-batch transform, forward, backward, update."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    loader = dm.train_dataloader()

    def run(n: int) -> None:
        done = 0
        while done < n:
            for raw in loader:
                batch = dm.on_after_batch_transfer(raw, 0)
                loss = torch.nn.functional.cross_entropy(model(batch["image"]), batch["target"])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                done += 1
                if done == n:
                    return

    run(2)  # warm-up
    start = time.perf_counter()
    run(steps)
    return (time.perf_counter() - start) / steps


class PilImages(Dataset):
    """Per-sample PIL pipeline: uint8 arrays -> PIL -> torchvision transforms -> tensor."""

    def __init__(self, images: np.ndarray, targets: np.ndarray, transform: transforms.Compose) -> None:
        self.images, self.targets, self.transform = images, targets, transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        array = self.images[i]
        image = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
        return self.transform(image), int(self.targets[i])


def alternated(repeats: int, *timers: Callable[[], float]) -> list[list[float]]:
    """Call the timers in turn ``repeats`` times, so a burst of load on the machine hits
    every side alike; returns each timer's rounds."""
    rounds: list[list[float]] = [[] for _ in timers]
    for _ in range(repeats):
        for timer, kept in zip(timers, rounds):
            kept.append(timer())
    return rounds


def samples_per_second(batches, count: int) -> float:
    start = time.perf_counter()
    for _ in batches():
        pass
    return count / (time.perf_counter() - start)


def data_path(preset: Preset, hybrid_dm: ForgetRemainDataModule, num_workers: int, repeats: int) -> dict:
    data = hybrid_dm.data.train
    plan = hybrid_dm.hybrid_plan
    stream_len = hybrid_dm.remain_indices.numel() + plan["label"].numel()

    def loader():  # the CPU side: index, gather, collate (and pin when pinning)
        return iter(hybrid_dm.train_dataloader())

    def with_device_work():  # plus mixing and augmentation, here on the CPU
        for raw in hybrid_dm.train_dataloader():
            yield hybrid_dm.on_after_batch_transfer(hybrid_dm.on_before_batch_transfer(raw, 0), 0)

    # The authors' path: hybrids precomputed once into an image array, then every sample
    # goes through PIL transforms individually.
    masks = hybrids.gradual_masks(data.images.shape[-2], data.images.shape[-1], preset.hybrids.delta)
    mixed = hybrids.mix(
        data.images[plan["forget_index"]], data.images[plan["remain_index"]], masks[plan["mask_id"]].unsqueeze(1)
    )
    hwc = lambda x: x.permute(0, 2, 3, 1).numpy()  # noqa: E731
    h = data.images.shape[-2]
    train_tf = [transforms.RandomCrop(h, padding=preset.crop_padding)] if preset.crop_padding else []
    if preset.horizontal_flip:
        train_tf.append(transforms.RandomHorizontalFlip())
    remaining = PilImages(
        hwc(data.images[hybrid_dm.remain_indices]),
        data.targets[hybrid_dm.remain_indices].numpy(),
        transforms.Compose([*train_tf, transforms.ToTensor()]),
    )
    hybrid_set = PilImages(hwc(mixed), plan["label"].numpy(), transforms.Compose([transforms.ToTensor()]))
    pil_loader = DataLoader(
        ConcatDataset([remaining, hybrid_set]), batch_size=preset.batch_size, shuffle=True, num_workers=num_workers
    )

    loader_rates, device_work_rates, pil_rates = alternated(
        repeats,
        lambda: samples_per_second(loader, stream_len),
        lambda: samples_per_second(with_device_work, stream_len),
        lambda: samples_per_second(lambda: iter(pil_loader), stream_len),
    )
    loader_rate, device_work_rate, pil_rate = max(loader_rates), max(device_work_rates), max(pil_rates)
    return {
        "loader_samples_per_s": loader_rate,
        "with_device_work_samples_per_s": device_work_rate,
        "pil_samples_per_s": pil_rate,
        "speedup": loader_rate / pil_rate,
        "with_device_work_speedup": device_work_rate / pil_rate,
        "rounds": {"loader": loader_rates, "with_device_work": device_work_rates, "pil": pil_rates},
    }


def fit_seconds(module: pl.LightningModule, dm: ForgetRemainDataModule, epochs: int, root: Path, callbacks=()) -> float:
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=root,
        callbacks=list(callbacks),
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    return time.perf_counter() - start


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="digits")
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per variant")
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="alternated rounds of the step and data-path timings; each side keeps its fastest",
    )
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--retrain-epochs", type=int, default=None, help="override the preset's Retrain epochs")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.repeats < 1:
        parser.error("--steps and --repeats must be at least 1")
    preset = PRESETS[args.preset]
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)

    print(
        f"[1/4] training step: NatMU (hybrids) vs fine-tuning ({args.steps} steps each, {args.repeats} rounds)",
        flush=True,
    )
    original = ClassifierModule(preset.backbone())
    hybrid_dm = attached(make_datamodule(preset, "hybrid", args.num_workers), original, args.out)
    plain_dm = attached(make_datamodule(preset, "remain", args.num_workers), original, args.out)
    model = preset.backbone()
    plain_rounds, hybrid_rounds = alternated(
        args.repeats, lambda: time_steps(plain_dm, model, args.steps), lambda: time_steps(hybrid_dm, model, args.steps)
    )
    t_plain, t_hybrid = min(plain_rounds), min(hybrid_rounds)

    print("[2/4] data path: ours vs per-sample PIL", flush=True)
    data = data_path(preset, hybrid_dm, args.num_workers, args.repeats)

    retrain_epochs = args.retrain_epochs or preset.classifier_epochs
    print(f"[3/4] wall time: Retrain ({retrain_epochs} epochs) vs NatMU ({preset.unlearn_epochs} epochs)", flush=True)
    pl.seed_everything(0, verbose=False)
    retrain = ClassifierModule(preset.backbone(), stream="remain", recipe=preset.classifier_recipe)
    t_retrain = fit_seconds(retrain, make_datamodule(preset, "remain", args.num_workers), retrain_epochs, args.out)
    ckpt = args.out / "speed_original.pt"
    torch.save(retrain.backbone.state_dict(), ckpt)  # any trained weights of the right shape
    natmu = NatMUModule(
        preset.backbone(),
        original_ckpt=str(ckpt),
        recipe=preset.natmu_recipe,
    )
    natmu_dm = make_datamodule(preset, "hybrid", args.num_workers)
    t_natmu = fit_seconds(natmu, natmu_dm, preset.unlearn_epochs, args.out)

    print("[4/4] evaluation vs one NatMU epoch", flush=True)
    evaluator = UnlearningEvaluator()
    start = time.perf_counter()
    evaluator.evaluate(natmu.trainer, natmu, final=False)  # the first one also gathers the splits, once per run
    t_eval_first = time.perf_counter() - start
    start = time.perf_counter()
    evaluator.evaluate(natmu.trainer, natmu, final=False)  # what runs after every later epoch
    t_eval = time.perf_counter() - start
    start = time.perf_counter()
    evaluator.evaluate(natmu.trainer, natmu, final=True)  # once at the end: adds the SVC and loss attacks
    t_eval_final = time.perf_counter() - start

    result = {
        "preset": preset.name,
        "retrain_epochs": retrain_epochs,
        "unlearn_epochs": preset.unlearn_epochs,
        "machine": {
            "device": cpu_name(),  # every trainer here is on the CPU
            "cpus": torch.get_num_threads(),
            "platform": platform.platform(),
            "cuda": torch.cuda.is_available(),
        },
        "hybrid_step_ratio": t_hybrid / t_plain,
        "step_seconds": {
            "natmu": t_hybrid,
            "fine_tune": t_plain,
            "rounds": {"natmu": hybrid_rounds, "fine_tune": plain_rounds},
        },
        "data_path_speedup": data["speedup"],
        "loader_images_per_s": data["loader_samples_per_s"],
        "data_path": data,
        "unlearn_vs_retrain_time": t_natmu / t_retrain,
        "seconds": {
            "retrain": t_retrain,
            "natmu": t_natmu,
            "evaluation": t_eval,
            "first_evaluation": t_eval_first,
            "final_evaluation": t_eval_final,
        },
        "evaluator": {"remain_subset": evaluator.remain_subset, "test_subset": evaluator.test_subset},
        "eval_fraction": t_eval / (t_natmu / preset.unlearn_epochs),
    }
    atomic_write_json(args.out / "speed.json", result)
    for key in (
        "hybrid_step_ratio",
        "data_path_speedup",
        "loader_images_per_s",
        "unlearn_vs_retrain_time",
        "eval_fraction",
    ):
        print(f"{key:>26}: {result[key]:.3f}")
    return result


if __name__ == "__main__":
    main()
