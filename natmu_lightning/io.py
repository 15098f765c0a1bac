"""Files the project writes appear whole or not at all (temporary name, then rename)."""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union

import numpy as np

PathLike = Union[str, "os.PathLike[str]"]


def check_file_name(what: str, name: PathLike) -> None:
    """Refuse a ``name`` that is not a plain file name (the file is written in a run's log dir:
    a folder in the name would fail only when it is written, at the end of a run).

    Raises:
        ValueError: naming ``what``.
    """
    name = os.fspath(name) if isinstance(name, os.PathLike) else name
    if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name or "\\" in name:
        raise ValueError(f"{what} must be a plain file name (it is written in the run's log dir), got {name!r}")


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def atomic_write_json(path: PathLike, payload: Any) -> Path:
    """Write ``payload`` as indented JSON, atomically."""
    return atomic_write_bytes(path, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())


def atomic_save_npy(path: PathLike, array: np.ndarray) -> Path:
    """Save one array as ``.npy``, atomically."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return atomic_write_bytes(path, buffer.getvalue())


def atomic_save_npz(path: PathLike, arrays: Mapping[str, np.ndarray]) -> Path:
    """Save named arrays as ``.npz``, atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds like allow_pickle
    return atomic_write_bytes(path, buffer.getvalue())


def json_ready(value: Any) -> Any:
    """A strict-JSON copy of ``value``: NaN and infinities become ``None``, tuples lists, numpy
    scalars Python numbers, paths strings and any other object its ``repr``.

    Example:
        >>> json_ready({"gap": float("nan"), "betas": (0.9, 0.999), "path": Path("a")})
        {'gap': None, 'betas': [0.9, 0.999], 'path': 'a'}
    """
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, (np.integer, np.floating)):
        return json_ready(value.item())
    if isinstance(value, Path):
        return str(value)
    return repr(value)


def run_dir(trainer: Any) -> Path:
    """The folder a Lightning run writes its artefacts to: the logger's log dir, else the root dir.

    Call it on EVERY rank: ``trainer.log_dir`` broadcasts under DDP, so calling it on
    rank zero only desynchronises the collectives of all ranks.
    """
    return Path(trainer.log_dir or trainer.default_root_dir)
