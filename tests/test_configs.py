"""Every composed run of ``configs/`` parses, instantiates and runs end to end on tiny data.

A run is a setting's ``base.yaml`` plus fragments (``configs/README.md``); ``RUNS`` lists
every composition the README, the quickstart and the benchmarks use, and
``test_every_fragment_is_run`` fails when a YAML file is in no run. Three layers:

* ``test_config_parses`` (fast, every run): ``main(args, run=False)`` parses and
  instantiates the composition with its data source pointed at a tiny fake copy in the
  real on-disk format; the backbone's output must match the fake dataset's class
  count and image size, and the forget request must resolve on a label-only copy
  of the dataset at its REAL size (e.g. CIFAR-10 1% -> 500 samples).
* ``test_setting_is_consistent`` (fast, merged YAML): inside one setting, the
  original and Retrain runs share the seed and backbone (so the same initial
  weights), every unlearning run's ``original_ckpt`` is what the original run
  writes, and its ``evaluator.reference_ckpt`` is written by the Retrain run of the
  same forget request.
* ``test_config_runs`` (one optimizer step per run): ``main(["fit", ...])`` on a
  fake dataset sized for a run; unlearning runs first run the original/Retrain
  runs whose checkpoints they name (each run once per session, shared),
  then the run must write ``unlearning_metrics.json`` with finite metrics.

Run sizes: the evaluator scores every training and test image (a ResNet-18 at 32x32
costs about 25 ms per image on 2 CPU cores), so the runs use the smallest fake data
that fits a recipe. A class-balanced random request needs at least one sample
per class and NatMU needs about ``k = 4`` remaining images per forgetting sample, so
random requests are scaled to ONE forgetting sample per class of the fake data
(``--data.forget.init_args.ratio 1/n``); the configured ratio itself is checked at the
dataset's real size in ``test_config_parses``. Settings in ``SLOW_SETTINGS`` run only
with ``-m slow``.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from natmu_lightning.cli import main
from natmu_lightning.configs import checkpoint_files, composition, merged, run_folder
from natmu_lightning.data import (
    CIFAR10,
    CIFAR10JPEG,
    CIFAR20,
    CIFAR100,
    ClassBalancedSubset,
    ClassForget,
    Digits,
    HardestForget,
    IndexForget,
    RandomForget,
    SubclassForget,
    TinyImageNet,
)
from natmu_lightning.data.sources import ImageSplit, SourceData
from natmu_lightning.methods.base import UnlearningModule
from tests import fake_data

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "configs"
#: Trainer fragments (configs/trainer/) are composed after a run's configs, not run alone.
FRAGMENTS = sorted((CONFIG_DIR / "trainer").glob("*.yaml"))
BASELINES = ("bad_teacher", "ft", "ga", "l1_sparse", "neggrad", "rl", "salun", "scrub", "ssd")


@dataclass(frozen=True)
class Run:
    """One composed run: ``configs/<setting>/base.yaml`` followed by ``fragments``."""

    setting: str
    fragments: tuple[str, ...]

    @property
    def id(self) -> str:
        return f"{self.setting}/{'+'.join(self.fragments)}"

    @property
    def paths(self) -> list[Path]:
        return composition(self.setting, *self.fragments)

    def config(self) -> dict:
        return merged(self.paths)

    def args(self) -> list[str]:
        return [arg for path in self.paths for arg in ("--config", str(path))]


def _runs(setting: str, requests: dict[str, tuple[str, ...]]) -> list[Run]:
    """The original once, then every method of each request (``""``: base.yaml's own request)."""
    runs = [Run(setting, ("original",))]
    for request, methods in requests.items():
        runs += [Run(setting, (request, method) if request else (method,)) for method in ("retrain", *methods)]
    return runs


RUNS = [
    *_runs("digits", {"": ("natmu", *BASELINES)}),
    *_runs("cifar10_small", {"": ("natmu", *BASELINES)}),
    *_runs("cifar10_vgg16", {"": ("natmu", *BASELINES), "forget_random10": ("natmu", *BASELINES)}),
    *_runs(
        "cifar100_resnet18",
        {"": ("natmu", "bad_teacher", "rl", "salun"), "forget_class_rocket": ("natmu_class", "bad_teacher_class")},
    ),
    *_runs("cifar20_resnet18", {"": ("natmu",)}),
    *_runs("tinyimagenet_resnet34", {"": ("natmu", "bad_teacher", "rl", "salun")}),
]
RUN_BY_ID = {run.id: run for run in RUNS}

#: Setting folders whose full runs are deselected by default (run them with -m slow).
#: The evaluator forwards every training and test image, twice in an unlearning run
#: (the model and Retrain). Measured on 2 idle CPU cores, one optimizer step per run:
#: VGG-16 on the 70-image CIFAR-10 fake about 2-5 s a run, ResNet-18 on the 200-image
#: CIFAR-20 fake about 2-3 s, ResNet-34 on the 1,400-image Tiny ImageNet fake (8x8
#: pixels) about 3 s; ResNet-18 on the 700-image CIFAR-100 fake (a random request needs
#: 6 images per class for NatMU's 4 hybrids per forgetting sample) about 7 s a run, 35 s
#: for the setting's five files. On a loaded machine expect two to three times as long.
SLOW_SETTINGS = {"cifar100_resnet18", "tinyimagenet_resnet34"}  # ResNet-18/34 at 32-64 px: seconds per run
#: Single files deselected by default: the VGG-16 baselines' configs (5 to 10 s each, twice the
#: evaluation since every unlearning fit also measures its original for the record); every
#: baseline runs by default through its digits config, and every VGG-16 config parses by
#: default. The CIFAR-20 sub-class NatMU run (ResNet-18, ~12 s) is slow too; its request and
#: its evaluation splits are tested by default in test_requests.py and test_evaluator.py.
SLOW_RUNS: set[str] = (
    {f"cifar10_vgg16/{method}" for method in BASELINES}
    | {f"cifar10_vgg16/forget_random10+{method}" for method in BASELINES}
    | {"cifar20_resnet18/natmu"}
)

METRIC_KEYS = ("forget_acc", "retain_acc", "test_acc", "mia_entropy")


def import_object(class_path: str) -> Any:
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


@contextlib.contextmanager
def chdir(path: Path) -> Iterator[None]:
    """Relative paths in the configs (``runs/...``) land in ``path``."""
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


# ------------------------------------------------------------------------------ fake data
@dataclass(frozen=True)
class Fake:
    """A tiny copy of a data source in its real on-disk format.

    make(folder, train_per_class) writes it and returns the value of ``arg``.
    ``train_per_class`` counts images per TARGET class (the unit of a random request).
    ``real_train`` is the real dataset's training-set size.
    """

    arg: str
    make: Callable[[Path, int], Path]
    parse_per_class: int
    run_per_class: int
    real_train: int


@contextlib.contextmanager
def small_tiny_imagenet_images(side: int) -> Iterator[None]:
    """fake_data writes 64x64 Tiny ImageNet JPEGs; runs use ``side`` x ``side`` ones.

    ResNet-34 at 64x64 costs about 180 ms per image on 2 CPU cores; the layout, the
    greyscale image and the wnid handling are unchanged. The 64x64 shape itself is
    checked by ``test_config_parses``.
    """
    original = fake_data._random_image
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fake_data, "_random_image", lambda rng, size, mode="RGB": original(rng, min(size, side), mode))
        yield


def _make_tiny_imagenet(folder: Path, per_class: int) -> Path:
    if per_class == 1:  # the parse check: real 64x64 images
        return fake_data.make_fake_tiny_imagenet(folder, train_per_class=1, val_per_class=1)
    with small_tiny_imagenet_images(8):
        return fake_data.make_fake_tiny_imagenet(folder, train_per_class=per_class, val_per_class=1)


FAKES: dict[type, Fake] = {
    CIFAR10: Fake(
        "root",
        lambda d, n: fake_data.make_fake_cifar10(d, train_per_class=n, test_per_class=1),
        parse_per_class=1,
        run_per_class=6,
        real_train=50_000,
    ),
    CIFAR10JPEG: Fake(
        "path",
        lambda d, n: fake_data.make_fake_cifar10_npz(d / "cifar10_jpeg.npz", train_per_class=n, test_per_class=1),
        parse_per_class=1,
        run_per_class=6,
        real_train=50_000,
    ),
    CIFAR100: Fake(
        "root",
        lambda d, n: fake_data.make_fake_cifar100(d, train_per_fine_class=n, test_per_fine_class=1),
        parse_per_class=1,
        run_per_class=6,
        real_train=50_000,
    ),
    # 1 image per fine class = 5 per coarse class: enough for sub-class and class
    # requests; a random CIFAR-20 request would get 1 forget + 4 remaining per class.
    CIFAR20: Fake(
        "root",
        lambda d, n: fake_data.make_fake_cifar100(d, train_per_fine_class=n // 5, test_per_fine_class=1),
        parse_per_class=5,
        run_per_class=5,
        real_train=50_000,
    ),
    TinyImageNet: Fake("root", _make_tiny_imagenet, parse_per_class=1, run_per_class=6, real_train=100_000),
}
REAL_DATA = (Digits,)  # embedded in scikit-learn: used as is


def source_spec(config: dict) -> tuple[dict, str]:
    """The innermost data source of the config (inside any ClassBalancedSubset) and the
    CLI prefix that reaches its init_args."""
    spec, prefix = config["data"]["source"], "--data.source.init_args"
    while import_object(spec["class_path"]) is ClassBalancedSubset:
        spec, prefix = spec["init_args"]["source"], prefix + ".source.init_args"
    return spec, prefix


def source_class(config: dict) -> type:
    return import_object(source_spec(config)[0]["class_path"])


def subset_train_per_class(config: dict) -> int | None:
    """The configured training images per class when the source is a ClassBalancedSubset."""
    spec = config["data"]["source"]
    return spec["init_args"]["train_per_class"] if import_object(spec["class_path"]) is ClassBalancedSubset else None


class FakeStore:
    """Fake datasets written once per session, keyed by (source class, per-class count)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.made: dict[tuple[type, int], Path] = {}

    def get(self, cls: type, per_class: int) -> Path:
        key = (cls, per_class)
        if key not in self.made:
            folder = self.base / f"{cls.__name__}_{per_class}"
            folder.mkdir(parents=True, exist_ok=True)
            self.made[key] = FAKES[cls].make(folder, per_class)
        return self.made[key]


@pytest.fixture(scope="session")
def fakes(tmp_path_factory: pytest.TempPathFactory) -> FakeStore:
    return FakeStore(tmp_path_factory.mktemp("fake_data"))


def source_args(config: dict, store: FakeStore, run: bool) -> list[str]:
    """CLI overrides pointing the config's data source (and random ratio) at fake data."""
    cls = source_class(config)
    if issubclass(cls, REAL_DATA):
        return []
    if cls not in FAKES:
        pytest.fail(f"no fake data for {cls.__name__}: add it to FAKES in tests/test_configs.py")
    fake = FAKES[cls]
    per_class = fake.run_per_class if run else fake.parse_per_class
    args = [f"{source_spec(config)[1]}.{fake.arg}", str(store.get(cls, per_class))]
    if subset_train_per_class(config) is not None:  # keep all of the fake data
        args += [
            "--data.source.init_args.train_per_class",
            str(per_class),
            "--data.source.init_args.test_per_class",
            "1",
        ]
    forget_cls = import_object(config["data"]["forget"]["class_path"])
    if run and issubclass(forget_cls, (RandomForget, HardestForget)):
        args += ["--data.forget.init_args.ratio", repr(1.0 / per_class)]
    return args


# ------------------------------------------------------------------------------ config roles
def checkpoint_outputs(config: dict) -> list[str]:
    """The fixed-name checkpoint files the run writes (``configs.checkpoint_files``)."""
    return [str(path) for path in checkpoint_files(config)]


def checkpoint_inputs(config: dict) -> list[str]:
    """Checkpoints the run needs before it can run: original weights and Retrain reference."""
    inputs = [
        (config["model"].get("init_args") or {}).get("original_ckpt"),
        (config.get("evaluator") or {}).get("reference_ckpt"),
    ]
    return [str(Path(p)) for p in inputs if p]


def producers(setting: str) -> dict[str, Run]:
    """Checkpoint path -> the run of the same setting that writes it."""
    return {output: run for run in RUNS if run.setting == setting for output in checkpoint_outputs(run.config())}


_FRESH: dict[str, Path] = {}


def write_fresh_backbone(config: dict, target: str, cache: Path | None = None) -> None:
    """A freshly initialised backbone of the config's architecture, as a plain state dict.

    With ``cache``, each architecture is built and saved once and linked to ``target``.
    """
    spec = config["model"]["init_args"]["backbone"]
    key = json.dumps(spec, sort_keys=True)
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    if cache is not None and key in _FRESH:
        os.symlink(_FRESH[key], target)
        return
    backbone = import_object(spec["class_path"])(**(spec.get("init_args") or {}))
    path = cache / f"backbone_{len(_FRESH)}.pt" if cache is not None else Path(target)
    torch.save(backbone.state_dict(), path)
    if cache is not None:
        _FRESH[key] = path.resolve()
        os.symlink(_FRESH[key], target)


def quiet() -> list[str]:
    return ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


# ------------------------------------------------------------------------------ tests
def test_every_fragment_is_run() -> None:
    """Each YAML of a setting folder is in some run, and each run's files exist."""
    used = {path for run in RUNS for path in run.paths}
    shipped = {p for p in CONFIG_DIR.rglob("*.yaml") if p not in FRAGMENTS}
    assert not shipped - used, f"in no run of RUNS: {sorted(str(p.relative_to(CONFIG_DIR)) for p in shipped - used)}"
    ids = [run.id for run in RUNS]
    assert len(set(ids)) == len(ids), f"run ids used twice: {sorted({i for i in ids if ids.count(i) > 1})}"


PARSE_PARAMS = [pytest.param(run, id=run.id) for run in RUNS]


@pytest.mark.usefixtures("in_tmp_path")
@pytest.mark.parametrize("run", PARSE_PARAMS)
def test_config_parses(run: Run, fakes: FakeStore, tmp_path: Path) -> None:
    config = run.config()
    original_ckpt = (config["model"].get("init_args") or {}).get("original_ckpt")
    if original_ckpt:  # loaded when the module is instantiated (the Retrain reference only at setup)
        write_fresh_backbone(config, original_ckpt, cache=fakes.base)
    cli = main([*run.args(), *source_args(config, fakes, run=False), *quiet()], run=False)

    datamodule, model = cli.datamodule, cli.model
    assert cli.trainer.max_epochs == config["trainer"]["max_epochs"]
    shape, num_classes = datamodule.image_shape, datamodule.num_classes
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros(2, *shape))
    assert out.shape == (2, num_classes), f"{run.id}: backbone gives {tuple(out.shape)} on {shape} images"

    request = datamodule.forget
    if request.needs_original_model or (isinstance(request, IndexForget) and isinstance(request.indices, str)):
        return  # resolved only in a run (original model / files written by other runs)
    data = datamodule.source.load()
    cls = source_class(config)
    if cls in FAKES:
        subset = subset_train_per_class(config)
        data = at_real_size(data, FAKES[cls].real_train if subset is None else subset * len(data.classes))
    forget = request.resolve(data, datamodule.seed)
    total, classes = data.train.targets.numel(), len(data.classes)
    assert 0 < forget.numel() < total
    if isinstance(request, RandomForget):
        assert forget.numel() == classes * round(request.ratio * total / classes)
        assert abs(forget.numel() - request.ratio * total) < classes
    elif isinstance(request, ClassForget):
        ids = torch.tensor(request.class_ids(data))
        assert forget.numel() == int(torch.isin(data.train.targets, ids).sum())
    elif isinstance(request, SubclassForget):
        assert forget.numel() == total // len(data.fine_classes)  # one fine class, balanced data


def at_real_size(data: SourceData, real_train: int) -> SourceData:
    """The training labels repeated up to the real dataset's size (1x1 images: labels only)."""
    n = data.train.targets.numel()
    assert real_train % n == 0, f"fake training set of {n} does not divide {real_train}"
    factor = real_train // n
    train = data.train
    fine = None if train.fine_targets is None else train.fine_targets.repeat_interleave(factor)
    big = ImageSplit(
        train.images[:, :, :1, :1].repeat_interleave(factor, 0), train.targets.repeat_interleave(factor), fine
    )
    test = data.test
    small_test = ImageSplit(test.images[:, :, :1, :1], test.targets, test.fine_targets)
    return SourceData(big, small_test, data.classes, data.fine_classes)


SETTINGS = sorted({run.setting for run in RUNS})


@pytest.mark.parametrize("setting", SETTINGS)
def test_setting_is_consistent(setting: str) -> None:
    configs = {run.id: run.config() for run in RUNS if run.setting == setting}
    made_by = producers(setting)
    classifiers = {i: c for i, c in configs.items() if c["model"]["class_path"].endswith("ClassifierModule")}
    originals = [i for i, c in classifiers.items() if c["model"]["init_args"].get("stream", "full") == "full"]
    assert len(originals) == 1, f"{setting}: expected one original run, got {originals}"
    original = configs[originals[0]]
    for i, c in configs.items():
        assert c["model"]["init_args"]["backbone"] == original["model"]["init_args"]["backbone"], i
        assert c["data"]["source"] == original["data"]["source"], i
    for i in classifiers:  # same seed before the backbone is built: same initial weights
        assert configs[i].get("seed_everything") == original.get("seed_everything"), f"{i}: seed differs"
        assert (configs[i].get("evaluator") or {}).get("reference_ckpt") is None, f"{i}: a classifier has no reference"
    for i, c in configs.items():
        original_ckpt = (c["model"].get("init_args") or {}).get("original_ckpt")
        if not original_ckpt:
            continue
        assert original_ckpt in checkpoint_outputs(original), f"{i}: original_ckpt is not what {originals[0]} writes"
        reference = (c.get("evaluator") or {}).get("reference_ckpt")
        assert reference, f"{i}: an unlearning run must compare with Retrain (evaluator.reference_ckpt)"
        assert str(Path(reference)) in made_by, f"{i}: no run of {setting} writes {reference}"
        retrain = made_by[str(Path(reference))].config()
        assert retrain["model"]["init_args"]["stream"] == "remain", i
        for key in ("forget", "seed"):
            assert retrain["data"].get(key) == c["data"].get(key), f"{i}: data.{key} differs from its Retrain's"
        assert run_folder(c).parent == run_folder(retrain).parent, f"{i}: its Retrain's request folder differs"
    outputs = [o for c in configs.values() for o in checkpoint_outputs(c)]
    assert len(outputs) == len(set(outputs)), f"{setting}: two runs write the same checkpoint"
    folders = [run_folder(c) for c in configs.values()]
    assert len(folders) == len(set(folders)), f"{setting}: two runs share a run folder"


class Runner:
    """Runs each config once per session in its setting's shared work folder."""

    def __init__(self, base: Path, store: FakeStore) -> None:
        self.base, self.store = base, store
        self.results: dict[str, Any] = {}

    def run(self, run: Run) -> dict:
        if run.id not in self.results:
            try:
                self.results[run.id] = self._run(run)
            except BaseException as error:  # a failed producer fails its dependants too
                self.results[run.id] = error
                raise
        result = self.results[run.id]
        if isinstance(result, BaseException):
            raise RuntimeError(f"{run.id} failed earlier in this session") from result
        return result

    def _run(self, run: Run) -> dict:
        config = run.config()
        workdir = self.base / run.setting
        workdir.mkdir(exist_ok=True)
        made_by = producers(run.setting)
        for target in checkpoint_inputs(config):
            if target in made_by:
                self.run(made_by[target])
            else:
                with chdir(workdir):
                    write_fresh_backbone(config, target)
        args = [
            "fit", *run.args(), *source_args(config, self.store, run=True),
            "--trainer.accelerator", "cpu", "--trainer.devices", "1",
            # max_steps, not limit_train_batches: jsonargparse reads "1" as the float 1.0 (= 100%).
            "--trainer.max_epochs", "1", "--trainer.max_steps", "1", "--trainer.limit_val_batches", "0",
            "--data.batch_size", "4", "--data.eval_batch_size", "64", "--evaluator.batch_size", "64",
            *quiet(),
        ]  # fmt: skip
        with chdir(workdir):
            cli = main(args)
            metrics_file = Path(cli.trainer.log_dir) / "unlearning_metrics.json"
            assert metrics_file.is_file(), f"{run.id} wrote no {metrics_file}"
            for output in checkpoint_outputs(config):
                assert Path(output).is_file(), f"{run.id} did not write {output}"
            record = json.loads(metrics_file.read_text())
            assert (Path(cli.trainer.log_dir) / "forget_indices.npy").is_file()
            if issubclass(import_object(config["model"]["class_path"]), UnlearningModule):
                check_unlearning_record(Path(cli.trainer.log_dir), config, record)
        record["_config"] = config
        return record


def check_unlearning_record(log_dir: Path, config: dict, metrics: dict) -> None:
    """An unlearning run's record: the CLI's own config, its metrics and its checkpoint files."""
    record = json.loads((log_dir / "unlearning_record.json").read_text())
    assert record["method"] == config["model"]["class_path"].rsplit(".", 1)[-1]
    assert record["config"]["model"]["init_args"]["original_ckpt"] == config["model"]["init_args"]["original_ckpt"]
    assert record["config"]["trainer"]["max_steps"] == 1  # the command line's override, as resolved
    assert record["metrics_after"] == metrics and record["metrics_before"]["forget_acc"] is not None
    written = {Path(entry["path"]) for entry in record["checkpoints_written"]}
    assert {Path(output).resolve() for output in checkpoint_outputs(config)} <= written


@pytest.fixture(scope="session")
def runner(tmp_path_factory: pytest.TempPathFactory, fakes: FakeStore) -> Runner:
    return Runner(tmp_path_factory.mktemp("runs"), fakes)


def is_slow(run: Run) -> bool:
    return run.setting in SLOW_SETTINGS or run.id in SLOW_RUNS


RUN_PARAMS = [pytest.param(run, id=run.id, marks=[pytest.mark.slow] if is_slow(run) else []) for run in RUNS]


@pytest.mark.parametrize("run", RUN_PARAMS)
def test_config_runs(run: Run, runner: Runner) -> None:
    record = runner.run(run)
    config = record["_config"]
    keys = list(METRIC_KEYS)
    if (config.get("evaluator") or {}).get("reference_ckpt"):
        keys.append("avg_gap")
        assert "reference" in record, "the Retrain reference was not evaluated"
    if issubclass(import_object(config["data"]["forget"]["class_path"]), ClassForget):
        keys.append("forget_test_acc")
    for key in keys:
        assert key in record and math.isfinite(record[key]), f"{key} = {record.get(key)!r}"
    for key in ("forget_acc", "retain_acc", "test_acc", "mia_entropy"):
        assert 0.0 <= record[key] <= 100.0
    assert record["stage"] == "fit"


@pytest.mark.parametrize("fragment", [pytest.param(p, id=p.name) for p in FRAGMENTS])
def test_trainer_fragment_composes(fragment: Path, capsys: pytest.CaptureFixture) -> None:
    """Each fragment composes after a run's configs (GPU ones cannot start here, so only print)."""
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *RUN_BY_ID["digits/natmu"].args(), "--config", str(fragment), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    for section in ("trainer", "data"):
        for key, value in merged([fragment]).get(section, {}).items():
            assert printed[section][key] == value, (section, key)


def test_fragments_exist() -> None:
    assert {p.name for p in FRAGMENTS} >= {"cpu_ddp2.yaml", "gpu.yaml", "ddp.yaml", "slurm_multinode.yaml"}


@pytest.mark.slow  # builds the wheel (about half a minute)
def test_the_wheel_ships_the_configs(tmp_path: Path) -> None:
    """Outside a checkout the quickstart reads its settings from the configs inside the wheel."""
    import subprocess
    import sys
    import zipfile

    build = ["wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)]
    subprocess.run([sys.executable, "-m", "pip", *build], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("natmu_lightning-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"natmu_lightning/config_files/{path.relative_to(CONFIG_DIR)}" for path in CONFIG_DIR.rglob("*.yaml")}
    shipped.add("natmu_lightning/config_files/README.md")
    assert shipped <= names, sorted(shipped - names)[:5]
    assert "natmu_lightning/configs.py" in names


def _documented_runs(text: str) -> list[str]:
    """The run ids of every command in ``text`` (a ``natmu-lightning`` line, or a shell variable
    holding ``--config`` arguments) that composes ``--config configs/<setting>/...``."""
    found = []
    for line in re.sub(r"\\\n\s*(#\s*)?", " ", text).splitlines():  # join continued lines
        files = [(s, n) for s, n in re.findall(r"--config configs/(\w+)/(\w+)\.yaml", line) if s != "trainer"]
        if files and ("natmu-lightning" in line or '="--config' in line):
            assert files[0][1] == "base", f"a composition must start with base.yaml: {line.strip()}"
            found.append(f"{files[0][0]}/{'+'.join(name for _, name in files[1:])}")
    return found


def test_every_composition_in_use_is_run() -> None:
    """The README's and the guide's commands, the quickstart's and the benchmarks' compositions are all in RUNS."""
    from benchmarks.runs import SCENARIOS, make_presets

    used = set(_documented_runs((ROOT / "README.md").read_text()))
    used |= set(_documented_runs((CONFIG_DIR / "README.md").read_text()))
    for page in (ROOT / "docs").glob("*.md"):  # the user guide
        used |= set(_documented_runs(page.read_text()))
    for base in CONFIG_DIR.glob("*/base.yaml"):
        used |= set(_documented_runs(base.read_text()))
    used |= {"digits/original", "digits/natmu"}  # QuickstartConfig.from_configs
    for preset in make_presets(ROOT / "data").values():
        for scenario in SCENARIOS:
            for name in ("original", "retrain", *preset.methods(scenario)):
                paths = preset.config(name, scenario)
                used.add(f"{paths[0].parent.name}/{'+'.join(p.stem for p in paths[1:])}")
    assert len(used) > 20
    assert not used - set(RUN_BY_ID), f"used but not run by this suite: {sorted(used - set(RUN_BY_ID))}"
