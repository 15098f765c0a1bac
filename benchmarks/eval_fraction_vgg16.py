"""Evaluation cost of the CIFAR-10 VGG-16 random-10% config, relative to one NatMU epoch.

    python benchmarks/eval_fraction_vgg16.py [--batches 5]

Running a full NatMU epoch of VGG-16 on a CPU takes hours, so this times per image, on
the config's own backbone and batch sizes: a training step (batch 128: forward, backward,
AdamW update) and an evaluation forward (batch 512, eval mode). It then scales both to the
config's sizes: 45,000 remaining + 4 x 5,000 hybrid rows per epoch, and per evaluation
during training the 5,000 forget images plus the evaluator's default subsets of the 45,000
remaining and 10,000 test images (``eval_fraction``; ``eval_fraction_whole_sets`` for all
60,000, the final evaluation's forwards). Prints the per-image times and the estimated
fractions.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # an uninstalled checkout runs too
from natmu_lightning import VGG16BN, UnlearningEvaluator  # noqa: E402
from natmu_lightning.metrics.schedule import subset_size  # noqa: E402

FORGET, REMAIN, TEST = 5_000, 45_000, 10_000
TRAIN_ROWS = REMAIN + 4 * FORGET
WHOLE_EVAL_ROWS = FORGET + REMAIN + TEST


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
    defaults = UnlearningEvaluator()
    eval_rows = FORGET + subset_size(REMAIN, defaults.remain_subset) + subset_size(TEST, defaults.test_subset)
    epoch_seconds = train_per_image * TRAIN_ROWS
    result = {
        "train_seconds_per_image": train_per_image,
        "eval_seconds_per_image": eval_per_image,
        "estimated_epoch_seconds": epoch_seconds,
        "evaluated_images": eval_rows,
        "estimated_eval_seconds": eval_per_image * eval_rows,
        "eval_fraction": eval_per_image * eval_rows / epoch_seconds,
        "eval_fraction_whole_sets": eval_per_image * WHOLE_EVAL_ROWS / epoch_seconds,
    }
    for key, value in result.items():
        print(f"{key:>26}: {value:.4g}")
    return result


if __name__ == "__main__":
    main()
