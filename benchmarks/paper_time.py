"""How long ``benchmarks.paper``'s table takes at a measured step time, and the original's and
Retrain's epochs that let it fit in the time a lent GPU gives (``--fit-in``)."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

PAPER_CLASSIFIER_EPOCHS = 100  # the original's and Retrain's, in the paper and configs/cifar10_vgg16
#: Below this many epochs the original's recipe loses its shape (its 2 warm-up epochs would be
#: over a fifth of the training): --fit-in never goes lower, and says when even this does not fit.
MIN_FITTED_EPOCHS = 10
#: Training steps the ten unlearning runs take as shipped (random 1%; the 10% request's are about
#: 5% fewer), a step of batch 256 counted twice, a smaller step as a whole one (the host's work per
#: step is the same) and extra forward passes as fractions of a step: FT and l1-sparse 10 epochs x
#: 194 steps of 256 (3,880 each); NegGrad+ 10 x 1,547 steps of 32 remaining images with 64 forget
#: images beside them, two forward passes (x1.3: 20,110); NatMU 5 x 403 (2,015); RL and SalUn
#: 5 x 391 (1,955 and 1,960 with the saliency pass); Bad Teacher 5 x 391 with two teachers' forward
#: passes (x1.67: 3,260); SCRUB 3 x 194 steps of 256 with a teacher (x1.33: 1,548); SSD one
#: importance pass (400); GA 5 x 2 steps of 256 (20). In all 39,028.
UNLEARNING_STEPS = 39_000
#: Seconds of the command outside training steps: each phase's process starts (imports, decoding
#: 60,000 JPEGs) and final evaluations (their SVC attacks took 33 to 47 s on the CPU), and the
#: evaluations during training.
FIXED_SECONDS = 130
CLASSIFIER_STEPS_PER_EPOCH = 391 + 387  # the original's (50,000 images) and Retrain's (49,500 at 1%)


def estimated_seconds(step_ms: float, classifier_epochs: int) -> float:
    """The command's wall time if every training step of every run took ``step_ms``, one
    process's step time alone: runs side by side share the GPU, so no gain is counted from them
    (an overestimate where the step is bound by the host and the GPU has room)."""
    steps = UNLEARNING_STEPS + classifier_epochs * CLASSIFIER_STEPS_PER_EPOCH
    return FIXED_SECONDS + steps * step_ms / 1000


def epochs_that_fit(step_ms: float, seconds: float, most: int = PAPER_CLASSIFIER_EPOCHS) -> int:
    """The most epochs of the original and Retrain, up to ``most``, with which
    :func:`estimated_seconds` stays within ``seconds``; never fewer than ``MIN_FITTED_EPOCHS``
    or ``most`` if that is fewer (then the table may not fit, which :func:`planned_epochs` records).

    Example:
        >>> epochs_that_fit(3.0, 460.0), epochs_that_fit(5.0, 460.0), epochs_that_fit(12.0, 460.0)
        (91, 34, 10)
    """
    if not math.isfinite(step_ms) or step_ms <= 0:
        raise ValueError(f"a step time must be a positive number of milliseconds, not {step_ms}")
    steps = (seconds - FIXED_SECONDS) * 1000 / step_ms - UNLEARNING_STEPS
    return max(min(MIN_FITTED_EPOCHS, most), min(most, int(steps // CLASSIFIER_STEPS_PER_EPOCH)))


def planned_epochs(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """``--classifier-epochs``, lowered to what fits in ``--fit-in`` seconds at the remaining-set
    step time of ``--step-overhead``'s ``step_overhead.json`` (of the ``cifar10-vgg16`` preset,
    except in a dry run) when both are given, with the estimate and whether it fits."""
    if (args.fit_in is None) != (args.step_overhead is None):
        parser.error("--fit-in and --step-overhead go together")
    if args.classifier_epochs < 1:
        parser.error("--classifier-epochs must be at least 1")
    plan: dict[str, Any] = {"epochs": args.classifier_epochs, "paper": PAPER_CLASSIFIER_EPOCHS}
    if args.fit_in is None:
        return plan
    try:
        measured = json.loads(args.step_overhead.read_text())
        step_ms = float(measured["streams"]["remain"]["lightning_ms"])
        epochs = epochs_that_fit(step_ms, args.fit_in, args.classifier_epochs)
    except (OSError, ValueError, KeyError, TypeError) as error:
        parser.error(f"--step-overhead {args.step_overhead}: no usable remain stream's lightning_ms ({error!r})")
    if measured.get("preset") != "cifar10-vgg16" and not args.dry_run:
        parser.error(f"--step-overhead {args.step_overhead} timed the {measured.get('preset')!r} preset, not VGG-16's")
    estimate = estimated_seconds(step_ms, epochs)
    plan.update(
        epochs=epochs,
        fit_in_seconds=args.fit_in,
        step_ms=step_ms,
        estimated_seconds=estimate,
        fits=estimate <= args.fit_in,
        step_overhead=str(args.step_overhead),
    )
    if not plan["fits"]:
        print(f"the table is not expected to fit in {args.fit_in:.0f} s at {step_ms:.1f} ms a step", flush=True)
    return plan
