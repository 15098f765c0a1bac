"""Loading model weights from user files safely and strictly."""

from __future__ import annotations

from pathlib import Path
from typing import Union

import torch
from torch import Tensor, nn

KNOWN_PREFIXES = ("_orig_mod.", "module.", "model.", "backbone.", "net.")
"""Wrappers' key prefixes, stripped (repeatedly) when every key carries one."""


def read_state_dict(path: Union[str, Path], what: str = "checkpoint") -> dict[str, Tensor]:
    """Read a Lightning checkpoint or a plain state dict with ``weights_only=True``.

    Args:
        path: file written by ``torch.save`` (a state dict) or by Lightning (a dict
            with a ``state_dict`` key).
        what: the argument's name, used in error messages (e.g. ``"original_ckpt"``).

    Returns:
        The tensors, with known wrapper prefixes stripped.

    Raises:
        ValueError: the file is missing, unreadable, truncated or holds no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} {str(path)!r} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types (KeyError, UnpicklingError, ...) on bad files
        raise ValueError(f"{what} {str(path)!r} is not a readable PyTorch checkpoint ({type(error).__name__}: {error})".strip()) from error
    if isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict):
        payload = payload["state_dict"]
    if not isinstance(payload, dict) or not payload or not all(isinstance(v, Tensor) for v in payload.values()):
        raise ValueError(f"{what} {str(path)!r} holds no state dict of tensors")
    return strip_prefixes(payload)


def strip_prefixes(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Remove wrapper prefixes (``module.``, ``_orig_mod.``, ...) shared by every key."""
    changed = True
    while changed:
        changed = False
        for prefix in KNOWN_PREFIXES:
            if state and all(key.startswith(prefix) for key in state):
                state = {key[len(prefix) :]: value for key, value in state.items()}
                changed = True
    return state


def load_weights(model: nn.Module, path: Union[str, Path], what: str = "checkpoint") -> None:
    """Load ``path`` into ``model`` strictly, with an error that names what does not fit."""
    state = read_state_dict(path, what)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{key}: file {tuple(state[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in expected
        if key in state and state[key].shape != expected[key].shape
    ]
    if missing or unexpected or mismatched:
        details = []
        if missing:
            details.append(f"missing {len(missing)} tensors (e.g. {missing[:3]})")
        if unexpected:
            details.append(f"unexpected {len(unexpected)} tensors (e.g. {unexpected[:3]})")
        if mismatched:
            details.append(f"shape mismatch in {len(mismatched)} tensors (e.g. {mismatched[:2]})")
        raise ValueError(
            f"{what} {str(path)!r} does not fit the {type(model).__name__} backbone: " + "; ".join(details)
            + " (another architecture or class count?)"
        )
    model.load_state_dict(state, strict=True)


def final_linear(model: nn.Module) -> nn.Linear:
    """The last ``nn.Linear`` of ``model`` (its classifier)."""
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer to treat as its classifier")
    return linears[-1]
