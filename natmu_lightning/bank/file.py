"""``bank.json``: what a bank of Retrains holds, read and checked (the command that builds one:
:mod:`natmu_lightning.bank.build`)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor, nn

from natmu_lightning.records import file_sha256, indices_sha256

BANK_FILENAME = "bank.json"
BANK_FORMAT = 1
FORGET_FILENAME = "forget_indices.npy"
DEFAULT_MEMBERS = 8
DEFAULT_FIRST_SEED = 1000
MIN_MEMBERS = 2
RANDOMNESS = (
    "member i trains with seed first_seed + i: --seed_everything (initial weights) and --data.seed (data order "
    "and augmentation); the forget set is the configs' resolved request, given to every member by index"
)


@dataclass(frozen=True)
class BankMember:
    """One Retrain of a bank: its seed, its checkpoint file (absolute) and the file's SHA-256."""

    seed: int
    checkpoint: Path
    sha256: str


@dataclass(frozen=True)
class ReferenceBank:
    """A ``bank.json`` as read (:func:`read_bank`).

    Attributes:
        path: the ``bank.json`` file.
        forget_sha256: digest of the forget request's sorted indices (:func:`~natmu_lightning.records.indices_sha256`).
        forget_count: how many samples the forget set holds.
        backbone: the class path of the members' backbone.
        architecture_sha256: :func:`architecture_sha256` of that backbone.
        num_classes: the number of classes.
        members: the bank's Retrains.
    """

    path: Path
    forget_sha256: str
    forget_count: int
    backbone: str
    architecture_sha256: str
    num_classes: int
    members: tuple[BankMember, ...]

    def check_request(self, forget_indices: Tensor) -> None:
        """Refuse a datamodule whose resolved forget set is not the bank's.

        Raises:
            ValueError: the digests differ.
        """
        digest = indices_sha256(forget_indices)
        if digest != self.forget_sha256:
            raise ValueError(
                f"reference_bank {str(self.path)!r} was trained for another forget request (its forget set: "
                f"{self.forget_count} samples, sha256 {self.forget_sha256[:16]}...; this run's: "
                f"{forget_indices.numel()} samples, sha256 {digest[:16]}...): build a bank for this request"
            )

    def check_members(self) -> None:
        """Refuse a member whose checkpoint is missing or changed since ``bank.json`` was written.

        Raises:
            ValueError: naming the member and the file.
        """
        for member in self.members:
            if not member.checkpoint.is_file():
                raise ValueError(
                    f"reference_bank {str(self.path)!r}: the checkpoint of member seed {member.seed}, "
                    f"{str(member.checkpoint)!r}, does not exist"
                )
            digest = file_sha256(member.checkpoint)
            if digest != member.sha256:
                raise ValueError(
                    f"reference_bank {str(self.path)!r}: the checkpoint of member seed {member.seed}, "
                    f"{str(member.checkpoint)!r}, changed since bank.json was written (sha256 {digest[:16]}..., "
                    f"bank.json holds {member.sha256[:16]}...)"
                )


def bank_path(path: str | Path) -> Path:
    """``bank.json`` itself when ``path`` is the folder holding it."""
    path = Path(path)
    return path / BANK_FILENAME if path.is_dir() else path


def read_bank(path: str | Path) -> ReferenceBank:
    """Read a ``bank.json`` (or the one in a bank folder); checkpoint paths are taken relative
    to its folder.

    Raises:
        ValueError: the file is missing, not a bank, or lists fewer than 2 members.
    """
    path = bank_path(path)
    if not path.is_file():
        raise ValueError(f"reference_bank {str(path)!r} does not exist (natmu-lightning-bank writes {BANK_FILENAME})")
    try:
        payload = json.loads(path.read_text())
        forget = payload["forget"]
        members = tuple(
            BankMember(int(entry["seed"]), (path.parent / entry["checkpoint"]).resolve(), str(entry["sha256"]))
            for entry in payload["members"]
        )
        bank = ReferenceBank(
            path=path.resolve(),
            forget_sha256=str(forget["indices_sha256"]),
            forget_count=int(forget["count"]),
            backbone=str(payload["backbone"]),
            architecture_sha256=str(payload["architecture_sha256"]),
            num_classes=int(payload["num_classes"]),
            members=members,
        )
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(
            f"reference_bank {str(path)!r} is not a bank.json written by natmu-lightning-bank "
            f"({type(error).__name__}: {error})"
        ) from error
    if len(bank.members) < MIN_MEMBERS:
        raise ValueError(
            f"reference_bank {str(path)!r} lists {len(bank.members)} member(s): a bank needs at least "
            f"{MIN_MEMBERS} (the interval needs their standard deviation; natmu-lightning-bank --members K)"
        )
    return bank


def architecture_sha256(model: nn.Module) -> str:
    """SHA-256 of the names and shapes of ``model``'s state dict, in order: two backbones share
    it exactly when one's weights load strictly into the other."""
    text = "\n".join(f"{name}:{tuple(value.shape)}" for name, value in model.state_dict().items())
    return hashlib.sha256(text.encode()).hexdigest()


def class_path(obj: object) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


# --------------------------------------------------------------------------- the command
