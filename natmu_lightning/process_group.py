"""Ending a multi-process run cleanly: the default process group released once the work is done.

Lightning keeps the default process group after the Trainer ends and destroys only an NCCL one
at exit. Left to the interpreter's exit, gloo's threads can abort a rank whose fit has finished
("terminate called without an active exception", SIGABRT, exit code 134; pytorch/pytorch issue
190489), failing a job that succeeded; measured here in 1 of 15 runs of a two-process CPU fit
(``tests/methods/test_baselines_teachers.py``, spawned ranks), none in 70 since the package's
modules release the group at exit.
"""

from __future__ import annotations

import atexit

import torch

_registered = False


def release_process_group() -> None:
    """Destroy the default process group, if any.

    Call it only after the work succeeded: after an error, other ranks may still be inside a
    collective that the destruction would hang (pytorch/torchtitan pull request 1342).
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def release_process_group_at_exit() -> None:
    """Have :func:`release_process_group` run when this process exits, once a run has ended well.

    The package's modules call it from their ``teardown`` hook (which Lightning calls only when
    the fit, validation, test or prediction succeeded), so every rank of a multi-process run
    releases its group before the interpreter tears the threads down: Lightning's spawned
    workers, and scripts launched once per rank (forked ranks end with ``os._exit``, which
    skips both this and the abort). Registered once per process, and only while a group exists;
    a later Trainer call in the same process that fails still releases the group at exit.
    """
    global _registered
    if not _registered and torch.distributed.is_available() and torch.distributed.is_initialized():
        atexit.register(release_process_group)
        _registered = True
