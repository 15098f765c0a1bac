"""Evaluation cost of the CIFAR-10 VGG-16 random-10% config, relative to one NatMU epoch.

    python benchmarks/eval_fraction_vgg16.py [--batches 5]

Running a full NatMU epoch of VGG-16 on a CPU takes hours, so this times per image, on
the config's own backbone and batch sizes: a training step (batch 128: forward, backward,
AdamW update) and an evaluation forward (batch 512, eval mode). It then scales both to the
config's sizes: 45,000 remaining + 4 x 5,000 hybrid rows per epoch, and 5,000 forget +
45,000 remaining + 10,000 test images per evaluation. Prints the per-image times and the
estimated fraction.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # an uninstalled checkout runs too
from natmu_lightning import VGG16BN  # noqa: E402

TRAIN_ROWS = 45_000 + 4 * 5_000
EVAL_ROWS = 5_000 + 45_000 + 10_000


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=5)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = VGG16BN(num_classes=10)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=2e-3)
    x_train, y_train = torch.rand(128, 3, 32, 32), torch.randint(0, 10, (128,))
    x_eval = torch.rand(512, 3, 32, 32)

    def train_step():
        loss = torch.nn.functional.cross_entropy(model(x_train), y_train)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def eval_step():
        with torch.no_grad():
            model(x_eval)

    model.train()
    train_step()  # warm-up
    start = time.perf_counter()
    for _ in range(args.batches):
        train_step()
    train_per_image = (time.perf_counter() - start) / (args.batches * 128)
    model.eval()
    eval_step()
    start = time.perf_counter()
    for _ in range(args.batches):
        eval_step()
    eval_per_image = (time.perf_counter() - start) / (args.batches * 512)
    result = {
        "train_seconds_per_image": train_per_image,
        "eval_seconds_per_image": eval_per_image,
        "estimated_epoch_seconds": train_per_image * TRAIN_ROWS,
        "estimated_eval_seconds": eval_per_image * EVAL_ROWS,
        "eval_fraction": (eval_per_image * EVAL_ROWS) / (train_per_image * TRAIN_ROWS),
    }
    for key, value in result.items():
        print(f"{key:>26}: {value:.4g}")
    return result


if __name__ == "__main__":
    main()
