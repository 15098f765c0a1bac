"""Loading model weights from user files safely and strictly."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor, nn

KNOWN_PREFIXES = ("_orig_mod.", "module.", "model.", "backbone.", "net.")
"""Wrappers' key prefixes, stripped (repeatedly) when every key carries one."""


def read_state_dict(path: str | Path, what: str = "checkpoint", strip: bool = True) -> dict[str, Tensor]:
    """Read a Lightning checkpoint or a plain state dict with ``weights_only=True``.

    Args:
        path: file written by ``torch.save`` (a state dict) or by Lightning (a dict
            with a ``state_dict`` key).
        what: the argument's name, used in error messages (e.g. ``"original_ckpt"``).
        strip: strip the known wrapper prefixes shared by every key.

    Returns:
        The tensors, with known wrapper prefixes stripped (unless ``strip`` is false). A
        checkpoint of a fit that had not finished (:func:`unfinished_fit`) is warned about.

    Raises:
        ValueError: the file is missing, unreadable, truncated or holds no tensors.
    """
    payload = read_checkpoint(path, what)
    short = unfinished_fit(payload)
    if short is not None:
        rank_zero_warn(
            f"{what} {str(path)!r} is from a fit that had not finished ({short}): interrupted, or stopped early. "
            "Resume that fit (--ckpt_path last) to use the model it was planned to be"
        )
    if isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict):
        payload = payload["state_dict"]
    if not isinstance(payload, dict) or not payload or not all(isinstance(v, Tensor) for v in payload.values()):
        raise ValueError(f"{what} {str(path)!r} holds no state dict of tensors")
    return strip_prefixes(payload) if strip else payload


FIT_LENGTH_KEY = "natmu_fit_length"
"""Where the package's modules record their fit's ``max_epochs``, ``max_steps`` and ``should_stop`` in a checkpoint."""


def unfinished_fit(payload: Any) -> str | None:
    """How far short of its planned length the fit that wrote a checkpoint stopped, e.g.
    ``"saved after epoch 40 of 100"``; ``None`` when it reached ``max_steps`` or ``max_epochs``
    (whichever came first), was being stopped on purpose (``EarlyStopping``, a ``Timer``), or the
    checkpoint does not say (a plain state dict, a module of your own, a file written before this
    was recorded). A checkpoint saved at an epoch's end holds that epoch's index, one saved after
    the fit the number of epochs done; a save in the middle of the last epoch passes as done."""
    planned = payload.get(FIT_LENGTH_KEY) if isinstance(payload, dict) else None
    if not isinstance(planned, dict) or planned.get("should_stop"):
        return None
    epoch, step = payload.get("epoch"), payload.get("global_step")
    if not isinstance(epoch, int) or not isinstance(step, int):
        return None
    max_epochs, max_steps = (
        value if isinstance(value, int) and value > 0 else None
        for value in (planned.get("max_epochs"), planned.get("max_steps"))
    )
    if max_steps is not None and step >= max_steps or max_epochs is not None and epoch + 1 >= max_epochs:
        return None
    if max_epochs is not None:
        return f"saved after epoch {epoch + 1} of {max_epochs}"
    return None if max_steps is None else f"saved at step {step} of {max_steps}"


def read_checkpoint(path: str | Path, what: str = "checkpoint") -> Any:
    """What ``torch.load`` reads from ``path`` with ``weights_only=True``.

    Raises:
        ValueError: the file is missing, unreadable or truncated (``what`` names it).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} {str(path)!r} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types (KeyError, UnpicklingError, ...) on bad files
        raise ValueError(
            f"{what} {str(path)!r} is not a readable PyTorch checkpoint ({type(error).__name__}: {error})".strip()
        ) from error


def trained_forget_set(path: str | Path, what: str = "checkpoint") -> Tensor | None:
    """The forget set the fit that wrote ``path`` resolved, sorted: a fit with
    :class:`~natmu_lightning.data.ForgetRemainDataModule` keeps it in the datamodule's state in
    every checkpoint. ``None`` for a file without one (a plain state dict, another datamodule's
    checkpoint).

    Raises:
        ValueError: the file is missing or unreadable.
    """
    return _forget_set(read_checkpoint(path, what))


def _datamodule_state(payload: Any) -> dict[str, Any] | None:
    """The state a ForgetRemainDataModule saved in a checkpoint (the entry holding ``forget_indices``)."""
    if isinstance(payload, dict):
        for key, state in payload.items():
            if key != "state_dict" and isinstance(state, dict) and isinstance(state.get("forget_indices"), Tensor):
                return state
    return None


def _forget_set(payload: Any) -> Tensor | None:
    state = _datamodule_state(payload)
    return None if state is None else state["forget_indices"].sort().values


def not_a_retrain(payload: Any) -> str | None:
    """Why a checkpoint says it is not a Retrain (trained from scratch on the remaining set), e.g.
    ``"it starts from original_ckpt 'o.ckpt'"``; ``None`` when it says nothing against it (or
    nothing at all: a plain state dict, a module of your own). The stream is the one the
    datamodule trained (its saved state), else the module's (``train_on`` in 0.2.0 checkpoints)."""
    hparams = payload.get("hyper_parameters") if isinstance(payload, dict) else None
    if not isinstance(hparams, dict):
        return None
    if hparams.get("original_ckpt"):
        return f"it starts from original_ckpt {hparams['original_ckpt']!r}"
    trained = (_datamodule_state(payload) or {}).get("stream") or hparams.get("stream") or hparams.get("train_on")
    if trained not in (None, "remain"):
        return f"it trains on the {trained!r} stream"
    return None


def check_reference_request(path: str | Path, datamodule: Any, what: str = "reference_ckpt") -> None:
    """Refuse a reference (a Retrain) trained for another forget request than ``datamodule``'s,
    and warn when its checkpoint says it is no Retrain (:func:`not_a_retrain`).

    The reference must have left out this run's forget set and nothing else: the same set,
    or in a further deletion request the union with what earlier requests forgot (a Retrain
    on the union). Nothing is checked before ``datamodule`` has resolved its request, or for a
    file that holds no forget set (:func:`trained_forget_set`).

    Raises:
        ValueError: the file's forget set is neither, naming both sizes and their overlap.
    """
    trained, reason = _reference_facts(path, what)
    if reason is not None:
        rank_zero_warn(
            f"{what} {str(path)!r} is not a Retrain by what its checkpoint records ({reason}): the gaps to it "
            "are not gaps to Retrain"
        )
    forget = getattr(datamodule, "forget_indices", None)
    if forget is None or trained is None:
        return
    accepted = [forget.sort().values]
    previous = getattr(datamodule, "previous_request", None)
    if previous is not None:
        accepted.append(torch.cat([forget, previous.already_forgotten]).unique())  # sorted
    if any(torch.equal(trained, indices) for indices in accepted):
        return
    common = int(torch.isin(trained, forget).sum())
    raise ValueError(
        f"{what} {str(path)!r} was trained for another forget request: its forget set has {trained.numel()} "
        f"samples, this run's {forget.numel()} ({common} in common), so its gaps would compare with a model "
        "that saw part of this forget set or missed remaining samples. Pass the Retrain of this request (the "
        "same forget request, data seed and dataset), or --evaluator.reference_ckpt null"
    )


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


def load_weights(model: nn.Module, path: str | Path, what: str = "checkpoint", prefix: str | None = None) -> None:
    """Load ``path`` into ``model`` strictly, with an error that names what does not fit.

    A checkpoint of a user's own LightningModule keeps the network under one attribute
    (``net.``, ``encoder.``, ...) beside other state. ``prefix`` names it (a trailing dot is
    added); without one, when exactly one top-level prefix holds tensors whose names and
    shapes are exactly the model's, those are loaded. Two such prefixes (a network and its
    EMA copy, say) are ambiguous and refused; the error lists the prefixes the file holds.

    Raises:
        ValueError: no key starts with ``prefix``, or the tensors do not fit the model (the
            message lists the file's prefixes and the shapes the model expects).
    """
    state = read_state_dict(path, what, strip=prefix is None)
    expected = model.state_dict()
    fitting: list[str] = []
    if prefix is not None:
        prefix = prefix if prefix.endswith(".") else prefix + "."
        if not any(key.startswith(prefix) for key in state):  # the file's own keys, nothing stripped
            found = ", ".join(f"{head} ({count} tensors)" for head, count in top_level_prefixes(state).items())
            raise ValueError(
                f"checkpoint_prefix {prefix!r} matches no tensor of {what} {str(path)!r}; its keys start with: {found}"
            )
        state = _under(state, prefix)
    else:
        fitting = [head for head in top_level_prefixes(state) if _fits(_under(state, head), expected)]
        if not _fits(state, expected) and len(fitting) == 1:
            state = _under(state, fitting[0])
    details = misfits(state, expected)
    if details:
        prefixes = ", ".join(f"{prefix} ({count} tensors)" for prefix, count in top_level_prefixes(state).items())
        example = ", ".join(f"{key} {tuple(value.shape)}" for key, value in list(expected.items())[:2])
        if len(fitting) > 1:
            details.append(f"the model's tensors are under several prefixes, {fitting}: keep one network per file")
        raise ValueError(
            f"{what} {str(path)!r} does not fit the {type(model).__name__} backbone: "
            + "; ".join(details)
            + f". The file's keys start with: {prefixes}; the backbone expects e.g. {example}"
            + " (another architecture or class count?)"
        )
    model.load_state_dict(state, strict=True)


def misfits(state: dict[str, Tensor], expected: dict[str, Tensor]) -> list[str]:
    """What keeps ``state`` from loading strictly where ``expected`` (a state dict) is: missing,
    unexpected and mismatched tensors, a few named of each; empty when it fits."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{key}: file {tuple(state[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in expected
        if key in state and state[key].shape != expected[key].shape
    ]
    details = []
    if missing:
        details.append(f"missing {len(missing)} tensors (e.g. {missing[:3]})")
    if unexpected:
        details.append(f"unexpected {len(unexpected)} tensors (e.g. {unexpected[:3]})")
    if mismatched:
        details.append(f"shape mismatch in {len(mismatched)} tensors (e.g. {mismatched[:2]})")
    return details


def top_level_prefixes(state: dict[str, Tensor]) -> dict[str, int]:
    """``{"net.": 62, ...}``: each key's first component and how many tensors it holds.

    Example:
        >>> top_level_prefixes({"net.fc.weight": torch.zeros(1), "net.fc.bias": torch.zeros(1), "step": torch.zeros(1)})
        {'net.': 2, 'step': 1}
    """
    counts: dict[str, int] = {}
    for key in state:
        head, dot, _ = key.partition(".")
        counts[head + dot] = counts.get(head + dot, 0) + 1
    return counts


def _under(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return strip_prefixes({key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)})


def _fits(state: dict[str, Tensor], expected: dict[str, Tensor]) -> bool:
    return state.keys() == expected.keys() and all(state[k].shape == expected[k].shape for k in expected)


def final_linear(model: nn.Module) -> nn.Linear:
    """The last ``nn.Linear`` of ``model`` (its classifier)."""
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer to treat as its classifier")
    return linears[-1]


def backbone_with_weights(module: Any, path: str, what: str, prefix: str | None = None) -> nn.Module:
    """A copy of ``module``'s ``backbone`` holding the weights in ``path`` (``what`` names the
    file in errors; ``prefix``: where the network sits in it, see :func:`load_weights`).

    Raises:
        ValueError: the module has no ``backbone``, or the weights do not fit it.
    """
    backbone = getattr(module, "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise ValueError(f"{what} is loaded into the module's `backbone`, and {type(module).__name__} has none")
    model = copy.deepcopy(backbone)
    load_weights(model, path, what, prefix=prefix)
    return model


def _reference_facts(path: str | Path, what: str) -> tuple[Tensor | None, str | None]:
    """:func:`_forget_set` and :func:`not_a_retrain` of the checkpoint at ``path``, read once per
    version of the file: the evaluator checks its reference at setup, when the fit starts and
    when it first loads it, and a checkpoint holds optimizer states too."""
    if not Path(path).is_file():
        read_checkpoint(path, what)  # raises: the file does not exist
    stat = Path(path).stat()
    return _read_reference_facts(str(path), (stat.st_mtime_ns, stat.st_size), what)


@functools.lru_cache(maxsize=4)
def _read_reference_facts(path: str, version: tuple[int, int], what: str) -> tuple[Tensor | None, str | None]:
    """``version`` (modification time, size) is only the cache key: a changed file is read again."""
    payload = read_checkpoint(path, what)
    return _forget_set(payload), not_a_retrain(payload)
