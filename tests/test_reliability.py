"""Nothing of the user's is written to; bad input stops before any training."""

import hashlib
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from natmu_lightning import (
    ClassifierModule,
    ForgetRemainDataModule,
    NatMUModule,
    SmallCNN,
    UnlearningEvaluator,
    checkpoints,
)
from natmu_lightning.checkpoints import check_reference_request, not_a_retrain, trained_forget_set
from natmu_lightning.cli import check_backbone_fits, lightning_checkpoint_state, main
from natmu_lightning.data import HardestForget, IndexForget
from natmu_lightning.metrics.schedule import measured_splits
from tests.tiny_runs import (
    DIGITS_ORIGINAL,
    DIGITS_RETRAIN,
    digits_args,
    digits_run_folder,
    make_dm,
    make_model,
    quiet_trainer,
    synthetic,
)


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_original_reference_and_index_file_are_never_written(tmp_path):
    torch.manual_seed(0)
    original, reference = tmp_path / "original.pt", tmp_path / "retrain.pt"
    torch.save(SmallCNN().state_dict(), original)
    torch.save(SmallCNN().state_dict(), reference)
    indices = tmp_path / "forget.npy"
    np.save(indices, np.arange(0, 1200, 10))
    before = {p: (digest(p), p.stat().st_mtime_ns) for p in (original, reference, indices)}

    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=2,
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        callbacks=[UnlearningEvaluator(reference_ckpt=str(reference))],
    )
    dm = ForgetRemainDataModule(forget=IndexForget(str(indices)), batch_size=32)
    trainer.fit(NatMUModule(SmallCNN(), original_ckpt=str(original)), datamodule=dm)
    after = {p: (digest(p), p.stat().st_mtime_ns) for p in before}
    assert after == before


@pytest.mark.usefixtures("in_tmp_path")
@pytest.mark.parametrize(
    "override,match",
    [
        (["--data.forget.init_args.ratio", "1.5"], "ratio"),
        (["--data.natmu.delta", "2.0"], "delta"),
        (["--data.natmu.k", "7"], "k must"),
        (["--model.init_args.original_ckpt", "missing.ckpt"], "original_ckpt"),
        (["--evaluator.reference_ckpt", "missing.ckpt"], "reference_ckpt"),
    ],
)
def test_cli_bad_input_fails_before_training(tmp_path, capsys, override, match):
    torch.save(SmallCNN().state_dict(), tmp_path / "original.pt")
    args = [
        "fit",
        *digits_args("natmu"),
        "--model.init_args.original_ckpt",
        "original.pt",
        "--evaluator.reference_ckpt",
        "original.pt",
        "--trainer.enable_progress_bar",
        "false",
        *override,
    ]
    with pytest.raises((ValueError, SystemExit)) as error:
        main(args)
    # Lightning's parser reports errors raised while instantiating classes on stderr and exits 2.
    message = str(error.value) if error.type is ValueError else capsys.readouterr().err
    assert error.type is ValueError or error.value.code == 2
    assert match in message, message[-500:]
    assert not list(tmp_path.rglob("*.ckpt")), "no checkpoint may be written"


def test_console_script_exits_non_zero_with_the_problem_named(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "natmu_lightning",
            "fit",
            *digits_args("natmu"),
            "--model.init_args.original_ckpt",
            str(tmp_path / "nowhere.ckpt"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "original_ckpt" in result.stderr and "does not exist" in result.stderr
    assert not list(tmp_path.rglob("*.ckpt"))


def test_a_value_error_from_outside_the_package_keeps_its_traceback(tmp_path, monkeypatch):
    """A bug in a user's backbone raising ``ValueError`` mid-training is not bad input: the console
    script re-raises it (traceback shown) instead of a one-line error with exit code 2."""
    from natmu_lightning.cli import entry_point, raised_by_package

    monkeypatch.chdir(tmp_path)
    argv = ["natmu-lightning", "fit", *digits_args("original"), "--trainer.max_steps", "1"]
    monkeypatch.setattr(sys, "argv", [*argv, "--model.init_args.backbone", "tests.tiny_runs.FailingBackbone"])
    with pytest.raises(ValueError, match="a bug in a user's backbone") as raised:
        entry_point()
    assert not raised_by_package(raised.value)
    monkeypatch.setattr(sys, "argv", [*argv, "--data.batch_size", "0"])  # refused while the config is built
    with pytest.raises(SystemExit) as refused:
        entry_point()
    assert refused.value.code == 2
    # refused by the package's own code once the run has started: resuming with another data.seed
    monkeypatch.setattr(sys, "argv", argv)
    entry_point()
    last = next((tmp_path / "runs").rglob("original.ckpt"))
    monkeypatch.setattr(sys, "argv", [*argv, "--data.seed", "5", "--ckpt_path", str(last)])
    with pytest.raises(SystemExit) as refused:
        entry_point()
    assert refused.value.code == 2


@pytest.mark.usefixtures("in_tmp_path")
def test_a_second_run_never_replaces_the_first_runs_outputs(tmp_path):
    args = ["fit", *digits_args("original"), "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false"]
    main(args)
    first = {p: digest(p) for p in (tmp_path / "runs").rglob("*") if p.is_file()}
    main(args)
    assert all(digest(p) == h for p, h in first.items()), "a file of the first run changed"
    second = DIGITS_ORIGINAL.with_name(f"{DIGITS_ORIGINAL.stem}-v1.ckpt")
    assert (tmp_path / DIGITS_ORIGINAL).is_file() and (tmp_path / second).is_file()
    versions = sorted(p.name for p in (tmp_path / digits_run_folder("original")).iterdir())
    assert versions == ["version_0", "version_1"]


@pytest.mark.usefixtures("in_tmp_path")
def test_a_checkpoint_saved_from_python_validates_through_the_cli(tmp_path):
    """A module built in Python (as the quickstart builds NatMU) records its class path, so the
    CLI can merge its checkpoint's hyperparameters into a config; load_from_checkpoint still works."""
    torch.manual_seed(0)
    torch.save(SmallCNN(num_classes=10).state_dict(), "original.pt")
    module = NatMUModule(SmallCNN(num_classes=10), original_ckpt="original.pt", recipe={"lr": 3e-3})
    trainer = quiet_trainer(tmp_path, max_steps=2)
    trainer.fit(module, datamodule=ForgetRemainDataModule(batch_size=64))
    trainer.save_checkpoint("natmu.ckpt", weights_only=False)

    cli = main(
        [
            "validate",
            *digits_args("natmu"),
            "--model.init_args.original_ckpt",
            "original.pt",
            "--evaluator.reference_ckpt",
            "original.pt",
            "--ckpt_path",
            "natmu.ckpt",
            "--trainer.enable_progress_bar",
            "false",
        ]
    )
    assert type(cli.model) is NatMUModule and cli.model.recipe.lr == 3e-3  # merged from the checkpoint
    for name, tensor in module.state_dict().items():
        assert torch.equal(cli.model.state_dict()[name], tensor), name
    assert sorted(tmp_path.rglob("unlearning_metrics.json"))

    reloaded = NatMUModule.load_from_checkpoint("natmu.ckpt", backbone=SmallCNN(num_classes=10))
    assert reloaded.recipe.lr == 3e-3


@pytest.mark.usefixtures("in_tmp_path")
def test_a_run_whose_reference_is_its_own_output_is_refused():
    """A forget fragment composed after retrain.yaml would hand Retrain its own checkpoint as reference."""
    DIGITS_RETRAIN.parent.mkdir(parents=True)
    DIGITS_RETRAIN.write_bytes(b"a previous Retrain")
    with pytest.raises(ValueError, match="is the checkpoint this run writes"):
        main([*digits_args("retrain"), "--evaluator.reference_ckpt", str(DIGITS_RETRAIN)], run=False)
    assert DIGITS_RETRAIN.read_bytes() == b"a previous Retrain"


def fitted_checkpoint(path: Path, module: pl.LightningModule, datamodule: pl.LightningDataModule) -> str:
    """``path``: a Lightning checkpoint of a two-step fit of ``module`` on ``datamodule``."""
    trainer = quiet_trainer(path.parent, max_steps=2)
    trainer.fit(module, datamodule=datamodule)
    trainer.save_checkpoint(path)
    return str(path)


def retrain_checkpoint(tmp_path, name: str, **datamodule) -> str:
    """A Lightning checkpoint of a two-step fit on the remaining set of ``make_dm(**datamodule)``."""
    return fitted_checkpoint(tmp_path / name, make_model(), make_dm(**datamodule))


def test_validating_a_checkpoint_on_another_forget_set_is_refused_unless_it_trained_on_everything(tmp_path):
    """``validate``/``test`` with a checkpoint: an unlearned model or Retrain measured on another
    forget set gives numbers of other samples; an original (the ``full`` stream) may be measured
    on any request."""
    retrain = retrain_checkpoint(tmp_path, "retrain.ckpt", seed=0)
    trainer = quiet_trainer(tmp_path, limit_val_batches=1)
    with pytest.raises(ValueError, match="different forget set .* on the 'remain' stream: its forget, remaining"):
        trainer.validate(make_model(), datamodule=make_dm(seed=1), ckpt_path=retrain, verbose=False)
    trainer.validate(make_model(), datamodule=make_dm(seed=0), ckpt_path=retrain, verbose=False)  # its own set

    original = fitted_checkpoint(tmp_path / "original.ckpt", make_model(), make_dm(stream="full", seed=0))
    trainer.validate(make_model(), datamodule=make_dm(stream="full", seed=1), ckpt_path=original, verbose=False)


def test_resuming_with_another_data_seed_is_refused(tmp_path):
    """The forget set a class request resolves does not depend on the seed, so only the seed tells."""
    from natmu_lightning.data import ClassForget

    last = fitted_checkpoint(tmp_path / "last.ckpt", make_model(), make_dm(forget=ClassForget([1]), seed=0))
    trainer = quiet_trainer(tmp_path, max_steps=4)
    with pytest.raises(ValueError, match="data.seed=0 and this configuration data.seed=3"):
        trainer.fit(make_model(), datamodule=make_dm(forget=ClassForget([1]), seed=3), ckpt_path=last)
    assert trainer.global_step == 0  # refused while restoring, before any step
    quiet_trainer(tmp_path, max_steps=4).fit(
        make_model(), datamodule=make_dm(forget=ClassForget([1]), seed=0), ckpt_path=last
    )


def test_a_checkpoint_of_an_unfinished_fit_is_warned_about_when_used_as_original_or_reference(tmp_path):
    """The configs' named checkpoint is rewritten every epoch: a killed original or Retrain leaves
    one that methods would use as if finished. Its module recorded the planned length."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    from natmu_lightning.checkpoints import unfinished_fit
    from natmu_lightning.methods import FTModule

    every_epoch = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{epoch}", save_top_k=-1)
    trainer = quiet_trainer(tmp_path, max_epochs=2, enable_checkpointing=True, callbacks=[every_epoch])
    trainer.fit(make_model(), datamodule=make_dm())
    trainer.save_checkpoint(tmp_path / "after.ckpt")
    first, last, after = (
        str(p) for p in (tmp_path / "ckpt/epoch=0.ckpt", tmp_path / "ckpt/epoch=1.ckpt", tmp_path / "after.ckpt")
    )
    assert unfinished_fit(torch.load(first, weights_only=True)) == "saved after epoch 1 of 2"
    assert (
        unfinished_fit(torch.load(last, weights_only=True))
        is None
        is unfinished_fit(torch.load(after, weights_only=True))
    )
    with pytest.warns(UserWarning, match=r"original_ckpt .* had not finished \(saved after epoch 1 of 2\)"):
        FTModule(SmallCNN(num_classes=4, width=4), original_ckpt=first)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        FTModule(SmallCNN(num_classes=4, width=4), original_ckpt=last)
    evaluator = UnlearningEvaluator(reference_ckpt=first)
    with pytest.warns(UserWarning, match=r"reference_ckpt .* had not finished"):
        quiet_trainer(tmp_path, max_steps=1, callbacks=[evaluator]).fit(make_model(), datamodule=make_dm())


@pytest.mark.parametrize(
    "planned, epoch, step, short",
    [
        ({"max_epochs": 100, "max_steps": 5000}, 99, 1000, None),  # the epochs ended it, before max_steps
        ({"max_epochs": 100, "max_steps": 500}, 40, 500, None),  # max_steps ended it
        ({"max_epochs": 100, "max_steps": -1, "should_stop": True}, 40, 400, None),  # EarlyStopping
        ({"max_epochs": -1, "max_steps": -1}, 3, 40, None),  # no limit: nothing to compare with
        ({"max_epochs": 100, "max_steps": -1}, 39, 400, "saved after epoch 40 of 100"),
        ({"max_epochs": -1, "max_steps": 500}, 3, 40, "saved at step 40 of 500"),
    ],
)
def test_a_fit_ends_at_whichever_limit_comes_first(planned, epoch, step, short):
    from natmu_lightning.checkpoints import FIT_LENGTH_KEY, unfinished_fit

    assert unfinished_fit({FIT_LENGTH_KEY: planned, "epoch": epoch, "global_step": step}) == short
    assert unfinished_fit({"epoch": epoch, "global_step": step}) is None  # not recorded: not judged


def test_a_reference_trained_for_another_forget_request_is_refused_before_training(tmp_path):
    """A Retrain of another random draw (another data seed) trained on part of this forget set:
    its gaps would be meaningless. The same request passes; a plain state dict is not checked."""
    other = retrain_checkpoint(tmp_path, "seed1.ckpt", seed=1)
    module = make_model()
    trainer = quiet_trainer(tmp_path, max_epochs=1, callbacks=[UnlearningEvaluator(reference_ckpt=other)])
    with pytest.raises(
        ValueError,
        match=r"trained for another forget request: its forget set has 12 samples, this run's 12 \(\d+ in common\)",
    ):
        trainer.fit(module, datamodule=make_dm(seed=0))
    assert trainer.global_step == 0

    same = retrain_checkpoint(tmp_path, "seed0.ckpt", seed=0)
    plain = tmp_path / "plain.pt"
    torch.save(torch.load(other, weights_only=True)["state_dict"], plain)
    for reference in (same, str(plain)):
        trainer = quiet_trainer(tmp_path, max_steps=1, callbacks=[UnlearningEvaluator(reference_ckpt=reference)])
        trainer.fit(make_model(), datamodule=make_dm(seed=0))
        assert trainer.global_step == 1


def test_a_reference_of_another_request_is_refused_when_the_request_is_resolved_late(tmp_path):
    """A request resolved with the model (hardest samples) is resolved after the callbacks' setup;
    the check then runs when the reference is first loaded, before any number is reported."""
    other = retrain_checkpoint(tmp_path, "random.ckpt", seed=0)
    torch.save(make_model().backbone.state_dict(), tmp_path / "original.pt")
    module = make_model(original_ckpt=str(tmp_path / "original.pt"))
    trainer = quiet_trainer(tmp_path, limit_val_batches=1, callbacks=[UnlearningEvaluator(reference_ckpt=other)])
    datamodule = make_dm(forget=HardestForget(0.2))
    with pytest.raises(ValueError, match="trained for another forget request"):
        trainer.validate(module, datamodule=datamodule)
    assert datamodule.forget_indices is not None  # resolved, then refused
    trainer = quiet_trainer(tmp_path, max_epochs=1, callbacks=[UnlearningEvaluator(reference_ckpt=other)])
    with pytest.raises(ValueError, match="trained for another forget request"):
        trainer.fit(module, datamodule=make_dm(forget=HardestForget(0.2)))
    assert trainer.global_step == 0  # refused at the fit's start, not at the first epoch's end


def test_check_reference_request_accepts_this_request_or_its_union_with_earlier_ones(tmp_path):
    """Hand-made checkpoints: the forget set in any order, or (a further request) a Retrain on the
    union with what earlier requests forgot; any other set is refused; nothing is checked before
    the request is resolved or for a file that holds none."""
    forget, already = torch.tensor([7, 3, 5]), torch.tensor([9, 1])

    def saved(name, **payload):
        torch.save({"state_dict": {"w": torch.zeros(1)}, **payload}, tmp_path / name)
        return tmp_path / name

    first = SimpleNamespace(forget_indices=forget, previous_request=None)
    further = SimpleNamespace(forget_indices=forget, previous_request=SimpleNamespace(already_forgotten=already))
    same = saved("same.ckpt", ForgetRemainDataModule={"forget_indices": torch.tensor([5, 7, 3]), "seed": 0})
    union = saved("union.ckpt", MyDataModule={"forget_indices": torch.tensor([1, 3, 5, 7, 9])})
    other = saved("other.ckpt", ForgetRemainDataModule={"forget_indices": torch.tensor([3, 5, 8])})
    check_reference_request(same, first)
    check_reference_request(same, further)
    check_reference_request(union, further)
    with pytest.raises(ValueError, match=r"its forget set has 5 samples, this run's 3 \(3 in common\)"):
        check_reference_request(union, first)
    with pytest.raises(ValueError, match=r"its forget set has 3 samples, this run's 3 \(2 in common\)"):
        check_reference_request(other, further)
    check_reference_request(other, SimpleNamespace(forget_indices=None))  # not resolved yet
    check_reference_request(saved("plain.pt"), first)  # no forget set in the file
    assert trained_forget_set(same).tolist() == [3, 5, 7] and trained_forget_set(saved("none.pt")) is None


def test_a_reference_is_read_once_per_version_of_its_file(tmp_path, monkeypatch):
    """The evaluator checks its reference up to three times; the whole checkpoint is read once,
    and again only when the file changes."""
    reads = []
    monkeypatch.setattr(checkpoints, "read_checkpoint", lambda *args: reads.append(args) or torch.load(args[0]))
    path = tmp_path / "retrain.ckpt"
    torch.save({"ForgetRemainDataModule": {"forget_indices": torch.tensor([3, 5])}}, path)
    datamodule = SimpleNamespace(forget_indices=torch.tensor([5, 3]), previous_request=None)
    for _ in range(3):
        check_reference_request(path, datamodule)
    assert len(reads) == 1
    torch.save({"ForgetRemainDataModule": {"forget_indices": torch.tensor([3, 4, 5])}}, path)
    with pytest.raises(ValueError, match="its forget set has 3 samples"):
        check_reference_request(path, datamodule)
    assert len(reads) == 2


@pytest.mark.usefixtures("in_tmp_path")
@pytest.mark.parametrize("subcommand", ["fit", "validate"])
@pytest.mark.parametrize(
    "make_file,match",
    [
        (lambda: torch.save(SmallCNN(num_classes=10).state_dict(), "given.ckpt"), "not a checkpoint written by"),
        (lambda: None, "ckpt_path 'given.ckpt' does not exist"),
        (lambda: Path("given.ckpt").write_bytes(b"not a checkpoint"), "not a readable PyTorch checkpoint"),
        (lambda: small_cnn_checkpoint(width=8), r"does not fit the SmallCNN backbone of the config: shape mismatch"),
    ],
)
def test_an_unusable_ckpt_path_is_refused_before_anything_is_written(tmp_path, subcommand, make_file, match):
    """A plain state dict failed inside Lightning with ``KeyError: 'pytorch-lightning_version'``
    after the run's config and logs were written; another architecture, with a RuntimeError there."""
    torch.save(SmallCNN(num_classes=10).state_dict(), "original.pt")
    make_file()
    before = sorted(tmp_path.rglob("*"))
    args = [
        *digits_args("natmu"),
        "--model.init_args.original_ckpt",
        "original.pt",
        "--evaluator.reference_ckpt",
        "null",
    ]
    with pytest.raises(ValueError, match=match):
        main([subcommand, *args, "--ckpt_path", "given.ckpt", "--trainer.enable_progress_bar", "false"])
    assert sorted(tmp_path.rglob("*")) == before, "the run wrote something"


def small_cnn_checkpoint(width: int) -> None:
    """``given.ckpt``: a Lightning checkpoint of a two-step digits fit of a SmallCNN of ``width``."""
    module = ClassifierModule(SmallCNN(num_classes=10, width=width))
    fitted_checkpoint(Path.cwd() / "given.ckpt", module, ForgetRemainDataModule(batch_size=64))


def test_an_empty_evaluation_split_is_refused_before_the_first_epoch(tmp_path):
    """A dataset without test samples failed only at the first evaluation, after an epoch of
    training, deep in the MIA (``nonmember_probs must contain at least one row``)."""
    trainer = quiet_trainer(tmp_path, max_epochs=1, callbacks=[UnlearningEvaluator()])
    with pytest.raises(ValueError, match=r"evaluation split\(s\) \['test'\] are empty"):
        trainer.fit(make_model(), datamodule=make_dm(source=synthetic(test_per_class=0)))
    assert trainer.global_step == 0
    # without the evaluator nothing reads the test split: the fit runs
    trainer = quiet_trainer(tmp_path, max_steps=2)
    trainer.fit(make_model(), datamodule=make_dm(source=synthetic(test_per_class=0)))
    assert trainer.global_step == 2


def test_only_the_measured_splits_must_hold_samples():
    """A class without test samples leaves ``forget_test`` empty: its numbers are ``nan``, not an error."""
    one, none = (torch.zeros(1, 1, 2, 2, dtype=torch.uint8), torch.zeros(1)), (torch.zeros(0, 1, 2, 2), torch.zeros(0))
    splits = {"forget": one, "remain": one, "test": one, "forget_test": none}
    assert measured_splits(splits) is splits
    with pytest.raises(ValueError, match=r"\['remain', 'test'\] are empty"):
        measured_splits({**splits, "remain": none, "test": none})


def test_the_ckpt_path_check_leaves_what_lightning_can_load_to_lightning(tmp_path):
    """Refused: ``backbone.`` tensors that do not fit. Accepted: a compiled backbone's
    ``_orig_mod.`` keys, a module whose ``backbone`` is an alias (its tensors saved under another
    name), a module with ``strict_loading`` off; a sharded checkpoint's folder is not read."""
    net = SmallCNN(num_classes=10)
    state = {f"backbone.{k}": v for k, v in net.state_dict().items()}
    narrow = {f"backbone.{k}": v for k, v in SmallCNN(num_classes=10, width=8).state_dict().items()}
    module = ClassifierModule(SmallCNN(num_classes=10))
    check_backbone_fits(module, "a.ckpt", state)
    check_backbone_fits(module, "a.ckpt", {k.replace("backbone.", "backbone._orig_mod."): v for k, v in state.items()})
    with pytest.raises(ValueError, match="does not fit the SmallCNN backbone"):
        check_backbone_fits(module, "a.ckpt", narrow)
    module.strict_loading = False
    check_backbone_fits(module, "a.ckpt", narrow)

    class Aliased(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = SmallCNN(num_classes=10)

        @property
        def backbone(self):
            return self.net

    check_backbone_fits(Aliased(), "a.ckpt", {f"net.{k}": v for k, v in net.state_dict().items()})
    (tmp_path / "sharded.ckpt").mkdir()
    assert lightning_checkpoint_state(tmp_path / "sharded.ckpt") is None
    assert lightning_checkpoint_state("last") is None and lightning_checkpoint_state(None) is None


def test_a_reference_whose_checkpoint_says_it_is_no_retrain_is_warned_about(tmp_path):
    """An original (stream ``full``) or an unlearned model (from an ``original_ckpt``) passed as
    the reference: it holds this run's forget set, so only what its checkpoint records tells
    (the datamodule's stream first, then the module's hyperparameters)."""
    torch.save(make_model().backbone.state_dict(), tmp_path / "original.pt")
    full = ClassifierModule(SmallCNN(num_classes=4, width=4), stream="full")
    fitted_checkpoint(tmp_path / "full.ckpt", full, make_dm(stream=None))
    # the same module told by the datamodule to train on the remaining set is a Retrain
    overridden = ClassifierModule(SmallCNN(num_classes=4, width=4), stream="full")
    fitted_checkpoint(tmp_path / "overridden.ckpt", overridden, make_dm())
    fitted_checkpoint(tmp_path / "finetuned.ckpt", make_model(original_ckpt=str(tmp_path / "original.pt")), make_dm())
    retrain = retrain_checkpoint(tmp_path, "retrain.ckpt")
    datamodule = SimpleNamespace(forget_indices=None)
    with pytest.warns(
        UserWarning, match=r"full.ckpt' is not a Retrain by what its checkpoint records \(it trains on the 'full'"
    ):
        check_reference_request(tmp_path / "full.ckpt", datamodule)
    with pytest.warns(
        UserWarning, match=r"is not a Retrain by what its checkpoint records \(it starts from original_ckpt"
    ):
        check_reference_request(tmp_path / "finetuned.ckpt", datamodule)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_reference_request(retrain, datamodule)
        check_reference_request(tmp_path / "overridden.ckpt", datamodule)
    assert not_a_retrain({"hyper_parameters": {"train_on": "full", "original_ckpt": None}}) == (
        "it trains on the 'full' stream"
    )  # a 0.2.0 checkpoint
