"""A bank of Retrains for one forget request: the ``natmu-lightning-bank`` command
(:mod:`~natmu_lightning.bank.build`) and the ``bank.json`` it writes
(:mod:`~natmu_lightning.bank.file`), which ``UnlearningEvaluator(reference_bank=...)`` reads
(:mod:`natmu_lightning.metrics.bank`; docs/bank.md)."""

from natmu_lightning.bank.build import build, entry_point
from natmu_lightning.bank.file import BANK_FILENAME, BankMember, ReferenceBank, read_bank

__all__ = ["BANK_FILENAME", "BankMember", "ReferenceBank", "build", "entry_point", "read_bank"]
