"""The shipped YAML configs and how they compose.

A run is a setting's ``base.yaml`` followed by fragments of the same folder (a forget
request, then a method), given to the CLI as repeated ``--config``: a later file overrides
an earlier one key by key (``configs/README.md``). The repository keeps them in ``configs/``;
the wheel ships the same files as ``natmu_lightning/config_files`` (``setup.py`` maps the folder).

Example:
    >>> [path.name for path in composition("digits", "natmu")]
    ['base.yaml', 'natmu.yaml']
    >>> merged(composition("digits", "natmu"))["model"]["class_path"]
    'natmu_lightning.NatMUModule'
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml


def configs_dir() -> Path:
    """The folder of the shipped configs: inside the installed wheel, else the checkout's ``configs/``.

    Raises:
        FileNotFoundError: neither exists (a wheel built without its configs).
    """
    package = Path(__file__).resolve().parent
    for folder in (package / "config_files", package.parent / "configs"):
        if (folder / "digits" / "base.yaml").is_file():
            return folder
    raise FileNotFoundError(f"no shipped configs next to {package} (looked for configs/digits/base.yaml)")


def composition(setting: str, *fragments: str) -> list[Path]:
    """The ``--config`` files of one run: ``<setting>/base.yaml``, then each fragment by name.

    Args:
        setting: a folder of :func:`configs_dir`, e.g. ``"cifar10_vgg16"``.
        fragments: file stems in that folder, in order, e.g. ``"forget_random1", "natmu"``.

    Raises:
        FileNotFoundError: a file that does not exist, named with the folder's fragments.
    """
    folder = configs_dir() / setting
    paths = [folder / f"{name}.yaml" for name in ("base", *fragments)]
    for path in paths:
        if not path.is_file():
            known = sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
            raise FileNotFoundError(f"no config {path}; {setting!r} has {known}")
    return paths


def merged(paths: Sequence[Path]) -> dict[str, Any]:
    """The YAML files merged the way repeated ``--config`` merges them, to read values from
    without instantiating anything: mappings key by key, the later value winning; a list of
    ``class_path`` entries item by item while the class paths agree (``trainer.callbacks``).
    The CLI itself remains the judge of what the merge means (class changes keep the
    arguments the new class accepts)."""
    result: dict[str, Any] = {}
    for path in paths:
        result = _merge(result, yaml.safe_load(Path(path).read_text()) or {})
    return result


def _merge(base: Any, override: Any) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        return {**base, **{key: _merge(base.get(key), value) for key, value in override.items()}}
    if isinstance(base, list) and isinstance(override, list) and _same_classes(base, override):
        return [_merge(old, new) for old, new in zip(base, override)]
    return override


def _same_classes(base: list, override: list) -> bool:
    return len(base) == len(override) and all(
        isinstance(old, dict)
        and isinstance(new, dict)
        and old.get("class_path") == new.get("class_path", old.get("class_path"))
        for old, new in zip(base, override)
    )


def nested(value: Any, *keys: str) -> Any:
    """``value[keys[0]][keys[1]]...`` of a loaded YAML document, or None when a key is missing.

    Example:
        >>> nested({"model": {"init_args": {"recipe": {"lr": 0.03}}}}, "model", "init_args", "recipe", "lr")
        0.03
        >>> nested({"model": {}}, "model", "init_args", "recipe") is None
        True
    """
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def run_folder(config: dict[str, Any]) -> Path:
    """Where a merged config's run logs (``version_N/``) and keeps its checkpoints
    (``checkpoints/``): ``<logger save_dir>/<logger name>`` (``configs/README.md``)."""
    logger = config["trainer"]["logger"]["init_args"]
    return Path(logger["save_dir"]) / logger.get("name", "lightning_logs")


def newest_version(run_root: Path) -> Path | None:
    """The newest ``version_N`` log folder under a run folder (by ``N``, not by name: version_10
    after version_9), ``None`` before the logger made one."""
    versions = sorted(run_root.glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    return versions[-1] if versions else None


def checkpoint_files(config: dict[str, Any]) -> list[Path]:
    """The fixed-name checkpoint files a merged config's ``ModelCheckpoint`` callbacks write:
    ``dirpath/filename.ckpt``, or without a ``dirpath`` in the run's checkpoint folder, as
    :func:`natmu_lightning.cli.place_checkpoints` places it (``run_folder(config)/checkpoints``).
    Callbacks without a ``filename`` name their files by epoch and step: not listed."""
    files = []
    for callback in (config.get("trainer") or {}).get("callbacks") or []:
        init = callback.get("init_args") or {}
        if not str(callback.get("class_path", "")).endswith("ModelCheckpoint") or not init.get("filename"):
            continue
        folder = init.get("dirpath") or run_folder(config) / "checkpoints"
        files.append(Path(folder) / f"{init['filename']}.ckpt")
    return files


def config_args(paths: Sequence[Path]) -> list[str]:
    """``--config PATH`` for each of ``paths``: the command-line form of a composition.

    Example:
        >>> config_args([Path("configs/digits/base.yaml"), Path("configs/digits/natmu.yaml")])
        ['--config', 'configs/digits/base.yaml', '--config', 'configs/digits/natmu.yaml']
    """
    return [arg for path in paths for arg in ("--config", str(path))]
