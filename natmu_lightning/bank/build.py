"""A bank of Retrains for one forget request: ``natmu-lightning-bank``, and its ``bank.json``.

    natmu-lightning-bank --config configs/digits/base.yaml --config configs/digits/retrain.yaml \\
        --members 8 --out runs/digits/random10/bank [--first-seed 1000]

trains K Retrain models of one forget request (the configs' ``data`` section defines it) that
differ only in their training randomness, and writes ``DIR/bank.json``, which
``UnlearningEvaluator(reference_bank=...)`` (``--evaluator.reference_bank DIR/bank.json``)
reads to report where an evaluated model's per-example outputs fall among the members'
(:mod:`natmu_lightning.metrics.bank`; docs/bank.md).

**What differs between members.** Member ``i`` trains with seed ``S = first_seed + i``
(default 1000 onwards, so the shipped Retrain, at seed 0, is never a member):
``--seed_everything S`` draws its initial weights (and any other global draw), and
``--data.seed S`` its data order (``ForgetRemainDataModule``'s per-epoch shuffle) and its
augmentation (random crops and flips). The datamodule's ``seed`` also draws a random forget
set, which must NOT change: the command resolves the configs' forget request once (with
their own ``data.seed``), saves it as ``DIR/forget_indices.npy``, and gives every member
that set by index (``--data.forget`` an :class:`~natmu_lightning.data.IndexForget` of that
file), so every member forgets exactly the same samples and the remaining set is the same.
Everything else (data, recipe, epochs, backbone) is the configs'.

**How members run.** One after another, in this process (``natmu-lightning fit`` through
:func:`natmu_lightning.cli.main`, on the configs' single device: a multi-process strategy
would re-run the whole command in every rank, so more than one device is refused), without
the configs' callbacks and checkpoints and without a reference, logging under
``DIR/members/seed<S>/``. After its fit, a member's weights are saved as
``DIR/members/seed<S>.ckpt`` (``Trainer.save_checkpoint(weights_only=True)``: the last
epoch's weights, no optimizer state) and its entry is added to ``bank.json`` at once.

**Resumable.** A rerun skips every member whose entry ``bank.json`` holds and whose
checkpoint is still there with the same SHA-256; any other member of the seeds asked for is
trained (again). A rerun with a larger ``--members`` adds members; entries already in
``bank.json`` stay.

**bank.json** holds the forget request (``forget.indices_sha256``: the SHA-256 of the sorted
indices as little-endian int64, as :func:`natmu_lightning.records.indices_sha256` computes
it and the unlearning record holds it; its count and description), the backbone's class
(``backbone``) and ``architecture_sha256`` (the SHA-256 of its state dict's names and
shapes), ``num_classes``, the ``command`` and ``config`` arguments, and per member its
``seed``, its ``checkpoint`` (relative to ``DIR``) and the checkpoint's ``sha256``.

**Refused before any training** (exit code 2): ``--members`` below 2; an ``--out`` whose
``bank.json`` is for another forget request, another architecture, another class count or
other ``--config`` arguments (members of two recipes would mix), or with a ``forget_indices.npy``
of another forget set but neither ``bank.json`` nor ``members/`` (a run's log folder, never
rewritten; a bank whose first member did not finish is started again for the new request);
a forget request the configs cannot resolve without a model (``HardestForget``: resolve it
once and pass its ``forget_indices.npy`` through ``IndexForget``); more than one device.

**Cost**: K Retrain fits of the configs' recipe (the configs' evaluator still evaluates each
member as it trains, every ``every_n_epochs``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn

from natmu_lightning.bank.file import (
    BANK_FILENAME,
    BANK_FORMAT,
    DEFAULT_FIRST_SEED,
    DEFAULT_MEMBERS,
    FORGET_FILENAME,
    MIN_MEMBERS,
    RANDOMNESS,
    architecture_sha256,
    class_path,
)
from natmu_lightning.configs import merged
from natmu_lightning.data.contracts import training_stream
from natmu_lightning.io import atomic_save_npy, atomic_write_json
from natmu_lightning.records import file_sha256, indices_sha256


def member_args(config_args: Sequence[str], seed: int, out: Path) -> list[str]:
    """The ``natmu-lightning fit`` arguments of the member of ``seed``: the configs, the seed for
    the weights, the order and the augmentation, the bank's forget set by index, no reference,
    logs under ``out/members/seed<seed>``, no callbacks or checkpoints of the configs'."""
    forget = {
        "class_path": "natmu_lightning.IndexForget",
        "init_args": {"indices": str(out.resolve() / FORGET_FILENAME)},
    }
    return [
        "fit",
        *config_args,
        "--seed_everything",
        str(seed),
        "--data.seed",
        str(seed),
        "--data.forget",
        json.dumps(forget),
        "--evaluator.reference_ckpt",
        "null",
        "--evaluator.reference_bank",
        "null",
        "--trainer.logger.init_args.save_dir",
        str(out / "members"),
        "--trainer.logger.init_args.name",
        f"seed{seed}",
        "--trainer.callbacks=[]",
        "--trainer.enable_checkpointing=false",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
    ]


def member_checkpoint(seed: int) -> str:
    """A member's checkpoint, relative to the bank's folder."""
    return f"members/seed{seed}.ckpt"


def describe_request(config_args: Sequence[str]) -> dict[str, Any]:
    """The configs' forget request resolved (with their own ``data.seed``) and their backbone:
    ``forget_indices`` (a tensor), ``forget`` (count, digest, description), ``backbone``,
    ``architecture_sha256``, ``num_classes`` and ``world_size``.

    Raises:
        ValueError: the request cannot be resolved without a model, the module has no backbone,
            or it is not a Retrain (another stream than the remaining set's, or an unlearning method).
    """
    from natmu_lightning.cli import main

    cli = main([*config_args, "--evaluator.reference_ckpt", "null", "--evaluator.reference_bank", "null"], run=False)
    datamodule, model = cli.datamodule, cli.model
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise ValueError(f"a bank needs a module with a `backbone` attribute; {class_path(model)} has none")
    training_needs = getattr(model, "training_needs", None)
    if callable(training_needs):  # the package's modules declare what they train on
        needs = training_needs()
        stream = training_stream(datamodule.requested_stream, needs)
        if stream != "remain" or needs.unlearns:
            raise ValueError(
                f"a bank holds Retrains (trained from scratch on the remaining set, e.g. retrain.yaml); these configs "
                f"train {class_path(model)} on the {stream!r} stream"
                + (" from a trained model" if needs.unlearns else "")
            )
    datamodule.setup("validate")
    indices = getattr(datamodule, "forget_indices", None)
    if indices is None:
        request = getattr(datamodule, "forget", None)
        raise ValueError(
            f"the configs' forget request {request!r} is resolved with the original model (HardestForget): resolve it "
            "once in an unlearning run, then give the bank its forget_indices.npy through IndexForget"
        )
    request = getattr(datamodule, "forget", None)
    describe = getattr(request, "describe", None)
    return {
        "forget_indices": indices,
        "forget": {
            "count": int(indices.numel()),
            "indices_sha256": indices_sha256(indices),
            "request": describe() if callable(describe) else repr(request),
            "indices_file": FORGET_FILENAME,
        },
        "backbone": class_path(backbone),
        "architecture_sha256": architecture_sha256(backbone),
        "num_classes": int(datamodule.num_classes),
        "world_size": int(cli.trainer.world_size),
    }


def _refuse_other_bank(existing: dict[str, Any], found: dict[str, Any], config_args: Sequence[str], path: Path) -> None:
    """Refuse an ``--out`` whose ``bank.json`` is for another request, architecture, class count
    or configs, by name or content (members of two recipes would mix)."""
    checks = (
        ("forget request", existing.get("forget", {}).get("indices_sha256"), found["forget"]["indices_sha256"]),
        ("backbone", existing.get("backbone"), found["backbone"]),
        ("architecture", existing.get("architecture_sha256"), found["architecture_sha256"]),
        ("number of classes", existing.get("num_classes"), found["num_classes"]),
        ("list of --config files", existing.get("config"), list(config_args)),
        # what those files say, merged: an edited recipe under the same names (absent before 0.3: not checked)
        (
            "content of the --config files",
            existing.get("config_sha256", found["config_sha256"]),
            found["config_sha256"],
        ),
    )
    for what, theirs, ours in checks:
        if theirs != ours:
            raise ValueError(
                f"{path} holds a bank for another {what} ({theirs!r}; these configs: {ours!r}): choose another --out"
            )


def config_sha256(config_args: Sequence[str]) -> str:
    """SHA-256 of the ``--config`` files' settings, merged as the CLI merges them (comments and
    layout aside)."""
    paths = [Path(value) for flag, value in zip(config_args[::2], config_args[1::2]) if flag == "--config"]
    return hashlib.sha256(json.dumps(merged(paths), sort_keys=True, default=str).encode()).hexdigest()


def _finished(entry: dict[str, Any] | None, out: Path) -> bool:
    if entry is None:
        return False
    checkpoint = out / entry["checkpoint"]
    return checkpoint.is_file() and file_sha256(checkpoint) == entry["sha256"]


def build(
    config_args: Sequence[str],
    out: Path,
    members: int = DEFAULT_MEMBERS,
    first_seed: int = DEFAULT_FIRST_SEED,
    command: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Train the members of seeds ``first_seed .. first_seed + members - 1`` that ``out`` does
    not hold yet, one after another in this process, writing ``out/bank.json`` after each.

    Args:
        config_args: ``["--config", PATH, ...]`` of a Retrain run.
        out: the bank's folder.
        members: K, at least 2.
        first_seed: the seed of the first member.
        command: the command line to record (default: ``sys.argv``).

    Returns:
        The bank.json written.

    Raises:
        ValueError: the refusals of the module docstring, before any training.
    """
    from natmu_lightning.cli import main

    if members < MIN_MEMBERS:
        raise ValueError(f"--members must be >= {MIN_MEMBERS} (the interval needs a standard deviation), got {members}")
    if first_seed < 0:
        raise ValueError(f"--first-seed must be >= 0, got {first_seed}")
    found = {**describe_request(config_args), "config_sha256": config_sha256(config_args)}
    if found["world_size"] > 1:
        raise ValueError(
            f"the configs train on {found['world_size']} processes; a bank trains its members in this process: "
            "run it with --trainer.devices 1"
        )
    path = out / BANK_FILENAME
    existing: dict[str, Any] = {}
    if path.is_file():
        try:
            existing = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{path} is not JSON ({error}): choose another --out") from error
        _refuse_other_bank(existing, found, config_args, path)
    indices: Tensor = found.pop("forget_indices")
    forget_file = out / FORGET_FILENAME
    if not forget_file.is_file() or indices_sha256(np.load(forget_file, allow_pickle=False)) != indices_sha256(indices):
        if forget_file.is_file() and not existing and not (out / "members").is_dir():
            raise ValueError(
                f"{forget_file} holds another forget set and {out} neither {BANK_FILENAME} nor members/ (a run's "
                "log folder?): choose another --out (nothing was written)"
            )
        atomic_save_npy(forget_file, indices.numpy())
    found.pop("world_size")
    entries = {int(entry["seed"]): entry for entry in existing.get("members", [])}
    bank: dict[str, Any] = {
        "format": BANK_FORMAT,
        **found,
        "randomness": RANDOMNESS,
        "command": list(command if command is not None else sys.argv),
        "config": list(config_args),
        "members": [],
    }

    def write() -> None:
        bank["members"] = [entries[seed] for seed in sorted(entries)]
        atomic_write_json(path, bank)

    for seed in range(first_seed, first_seed + members):
        if _finished(entries.get(seed), out):
            print(f"member seed {seed}: already trained ({entries[seed]['checkpoint']}), skipped", flush=True)
            continue
        entries.pop(seed, None)
        print(f"member seed {seed}: training", flush=True)
        cli = main(member_args(config_args, seed, out))
        trained = getattr(cli.datamodule, "forget_indices", None)
        if trained is None or indices_sha256(trained) != found["forget"]["indices_sha256"]:  # IndexForget guards it
            raise RuntimeError(f"member seed {seed} did not train on the bank's forget set")
        checkpoint = out / member_checkpoint(seed)
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        cli.trainer.save_checkpoint(checkpoint, weights_only=True)
        entries[seed] = {"seed": seed, "checkpoint": member_checkpoint(seed), "sha256": file_sha256(checkpoint)}
        write()
    write()
    return bank


def entry_point(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="natmu-lightning-bank", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action="append", required=True, help="a Retrain run's configs, in order (repeat)")
    parser.add_argument("--members", type=int, default=DEFAULT_MEMBERS, help="K, the number of Retrains (>= 2)")
    parser.add_argument("--out", type=Path, required=True, help="the bank's folder (bank.json, members/)")
    parser.add_argument(
        "--first-seed", type=int, default=DEFAULT_FIRST_SEED, help="seed of the first member; member i: first + i"
    )
    args = parser.parse_args(argv)
    if args.members < MIN_MEMBERS:
        parser.error(f"--members must be >= {MIN_MEMBERS}, got {args.members}")
    config_args = [arg for path in args.config for arg in ("--config", path)]
    command = ["natmu-lightning-bank", *(sys.argv[1:] if argv is None else argv)]
    try:
        bank = build(config_args, args.out, args.members, args.first_seed, command)
    except (ValueError, FileNotFoundError, FloatingPointError) as error:
        parser.exit(2, f"natmu-lightning-bank: error: {error}\n")
    print(f"{len(bank['members'])} members: --evaluator.reference_bank {args.out / BANK_FILENAME}")


if __name__ == "__main__":
    entry_point()
