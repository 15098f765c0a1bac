"""Unlearning records: the file format, the chain of deletion requests, and the summary command.

An unlearning fit writes ``unlearning_record.json`` (see
:class:`~natmu_lightning.callbacks.UnlearningRecord` for its fields). A later deletion
request on the unlearned model names that record (``ForgetRemainDataModule(previous_record=...)``):
:func:`load_previous_request` checks it against the files it names and returns what was
forgotten so far.

``natmu-lightning-record PATH`` (``python -m natmu_lightning.records``) prints a short
summary of a record; ``PATH`` is the record or the run folder holding it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from natmu_lightning.metrics.names import current_names

RECORD_FILENAME = "unlearning_record.json"
FORGET_INDICES_FILENAME = "forget_indices.npy"
ALREADY_FORGOTTEN_FILENAME = "already_forgotten_indices.npy"
_HASH_CHUNK = 1 << 20


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_entry(path: str | Path) -> dict[str, Any]:
    """``{"path", "bytes", "sha256"}`` of a file: its absolute path, size and the digest of its bytes."""
    path = Path(path).resolve()
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": file_sha256(path)}


def indices_sha256(indices: Tensor | np.ndarray | Sequence[int]) -> str:
    """SHA-256 of the sorted indices as little-endian int64 bytes.

    Example:
        >>> indices_sha256([3, 1]) == hashlib.sha256(np.array([1, 3], dtype="<i8").tobytes()).hexdigest()
        True
    """
    values = indices.numpy() if isinstance(indices, Tensor) else np.asarray(indices)
    return hashlib.sha256(np.sort(values.astype("<i8").ravel()).tobytes()).hexdigest()


def indices_entry(indices: Tensor, file: Path | None) -> dict[str, Any]:
    """``{"count", "indices_sha256", "indices_file"}`` of a set of training indices."""
    return {
        "count": int(indices.numel()),
        "indices_sha256": indices_sha256(indices),
        "indices_file": None if file is None else str(Path(file).resolve()),
    }


def record_path(path: str | Path) -> Path:
    """The record itself when ``path`` is a folder holding one."""
    path = Path(path)
    return path / RECORD_FILENAME if path.is_dir() else path


def read_record(path: str | Path) -> dict[str, Any]:
    """Read a record (or the record in a run folder).

    Raises:
        ValueError: the file is missing or is not a JSON object.
    """
    path = record_path(path)
    if not path.is_file():
        raise ValueError(
            f"unlearning record {str(path)!r} does not exist (an unlearning fit writes {RECORD_FILENAME} "
            "in its log dir)"
        )
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"unlearning record {str(path)!r} is not JSON: {error}") from error
    if not isinstance(record, dict):
        raise ValueError(f"unlearning record {str(path)!r} does not hold a JSON object")
    return record


@dataclass(frozen=True)
class PreviousRequest:
    """What the requests before this one forgot, read from the last one's record.

    Attributes:
        record: ``{"path", "bytes", "sha256"}`` of that record file (the link the next record keeps).
        already_forgotten: sorted training indices forgotten by every earlier request.
        checkpoint_sha256: digests of the checkpoint files that run wrote; the next request
            must start from one of them.
    """

    record: dict[str, Any]
    already_forgotten: Tensor
    checkpoint_sha256: frozenset[str]

    def check_original(self, original_ckpt: str | Path) -> None:
        """Refuse an ``original_ckpt`` that is not a checkpoint the previous request's run wrote.

        Raises:
            ValueError: the file's digest is not among the record's ``checkpoints_written``.
        """
        if not self.checkpoint_sha256:
            raise ValueError(
                f"the previous request's record {self.record['path']!r} lists no checkpoint written by its run, "
                "so no model can continue from it (save one with ModelCheckpoint or record.add_checkpoint)"
            )
        if not Path(original_ckpt).is_file():
            raise ValueError(f"original_ckpt {str(original_ckpt)!r} does not exist")
        digest = file_sha256(original_ckpt)
        if digest not in self.checkpoint_sha256:
            raise ValueError(
                f"original_ckpt {str(original_ckpt)!r} (sha256 {digest[:16]}...) is not a checkpoint the previous "
                f"request's run wrote (its record {self.record['path']!r} lists sha256 "
                f"{', '.join(sorted(d[:16] + '...' for d in self.checkpoint_sha256))}): a further request must start "
                "from the model the previous one produced"
            )


def load_previous_request(path: str | Path) -> PreviousRequest:
    """Read the previous request's record and the index files it names, checking their digests.

    Raises:
        ValueError: a missing or unreadable record or index file, or an index file whose
            digest differs from the one the record holds.
    """
    path = record_path(path)
    record = read_record(path)
    parts = []
    for key in ("forgotten", "already_forgotten"):
        entry = record.get(key)
        if entry is None and key == "already_forgotten":
            continue
        parts.append(_checked_indices(entry, key, path))
    already = torch.unique(torch.cat(parts)) if parts else torch.zeros(0, dtype=torch.long)
    written = frozenset(entry["sha256"] for entry in record.get("checkpoints_written") or [] if "sha256" in entry)
    return PreviousRequest(file_entry(path), already, written)


def _checked_indices(entry: Any, key: str, record: Path) -> Tensor:
    if not isinstance(entry, dict) or not entry.get("indices_file") or not entry.get("indices_sha256"):
        raise ValueError(
            f"unlearning record {str(record)!r} has no {key}.indices_file / indices_sha256 to continue from"
        )
    file = Path(entry["indices_file"])
    if not file.is_file():
        raise ValueError(f"{key}.indices_file {str(file)!r} named by {str(record)!r} does not exist")
    try:
        values = np.load(file, allow_pickle=False).reshape(-1)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read {key}.indices_file {str(file)!r}: {error}") from error
    if not np.issubdtype(values.dtype, np.integer) or indices_sha256(values) != entry["indices_sha256"]:
        raise ValueError(
            f"{key}.indices_file {str(file)!r} does not match the indices_sha256 that {str(record)!r} "
            "holds: the file changed since the run"
        )
    return torch.from_numpy(values.astype(np.int64))


# --------------------------------------------------------------------------- summary
METRIC_LABELS = (
    ("forget_acc", "forget acc"),
    ("remain_acc", "remaining acc"),
    ("test_acc", "test acc"),
    ("forget_test_acc", "forgotten-kind test acc"),
    ("mia_entropy", "MIA (entropy)"),
    ("avg_gap", "avg gap to Retrain"),
)
SHOWN_VERSIONS = ("natmu-lightning", "torch", "pytorch-lightning", "python")


def summarize(record: dict[str, Any]) -> str:
    """The record as a few aligned lines: what was forgotten, from and into which files, when,
    and the metrics before and after."""
    lines = [f"{'method':<10}{record.get('method')} ({record.get('method_class_path')})"]
    forgot = record.get("forgotten")
    if forgot:
        lines.append(f"{'forgot':<10}{forgot['count']} training samples, {forgot['request']}")
        per_class = ", ".join(f"{name}: {count}" for name, count in (forgot.get("per_class") or {}).items())
        if per_class:
            lines.append(f"{'':<10}per class {per_class}")
        lines.append(f"{'':<10}indices sha256 {forgot['indices_sha256']}")
    if record.get("previous_record"):
        already = record.get("already_forgotten") or {}
        lines.append(
            f"{'after':<10}{record['previous_record']['path']} ({already.get('count')} samples forgotten before)"
        )
    original = record.get("original_checkpoint")
    if original:
        lines.append(f"{'from':<10}{original['path']}  sha256 {original['sha256']}")
    for entry in record.get("checkpoints_written") or []:
        lines.append(f"{'wrote':<10}{entry['path']}  sha256 {entry['sha256']}")
    if not record.get("checkpoints_written"):
        lines.append(f"{'wrote':<10}no checkpoint file")
    lines.append(f"{'when':<10}{_period(record)}; {record.get('world_size')} process(es), seed {record.get('seed')}")
    versions = record.get("versions") or {}
    lines.append(f"{'versions':<10}" + ", ".join(f"{name} {versions.get(name)}" for name in SHOWN_VERSIONS))
    lines.extend(_metrics_table(record.get("metrics_before"), record.get("metrics_after")))
    return "\n".join(lines)


def _period(record: dict[str, Any]) -> str:
    start, end = record.get("started_at"), record.get("finished_at")
    text = f"{start} -> {end}"
    if start and end:
        text += f" ({(datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds():.0f} s)"
    if record.get("resumed_at"):
        text += f", resumed at {', '.join(record['resumed_at'])}"
    return text


def _metrics_table(before: dict | None, after: dict | None) -> list[str]:
    if not before and not after:
        return [f"{'metrics':<10}none recorded (no UnlearningEvaluator in the run)"]
    before, after = current_names(before or {}), current_names(after or {})
    lines = ["", f"{'':<26}{'before':>10}{'after':>10}"]
    for key, label in METRIC_LABELS:
        if key in before or key in after:
            lines.append(f"{label:<26}{_number(before.get(key)):>10}{_number(after.get(key)):>10}")
    return lines


def _number(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}"


def main(args: Sequence[str] | None = None) -> str:
    """Print the summary of the record at ``args[0]`` (a file or a run folder) and return it."""
    parser = argparse.ArgumentParser(prog="natmu-lightning-record", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help=f"{RECORD_FILENAME} or the run folder holding it")
    ns = parser.parse_args(args)
    try:
        record = read_record(ns.path)
    except ValueError as error:
        parser.error(str(error))
    text = f"Unlearning record {record_path(ns.path)}\n" + summarize(record)
    print(text)
    return text


def entry_point() -> None:
    main()


if __name__ == "__main__":
    entry_point()
