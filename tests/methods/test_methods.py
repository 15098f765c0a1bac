"""NatMUModule / ClassifierModule: weight loading, optimisation and clear errors."""

import math

import pytest
import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.core.saving import save_hparams_to_yaml

from natmu_lightning.backbones import ResNet18, SmallCNN
from natmu_lightning.data import ForgetRemainDataModule, SyntheticImages
from natmu_lightning.methods import ClassifierModule, NatMUModule
from natmu_lightning.methods.recipe import LrFactor, Recipe
from tests.tiny_runs import quiet_trainer


@pytest.fixture
def original_state(tmp_path):
    torch.manual_seed(0)
    net = SmallCNN(num_classes=10)
    path = tmp_path / "plain.pt"
    torch.save(net.state_dict(), path)
    return net, path


def same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_loads_plain_state_dict(original_state):
    net, path = original_state
    module = NatMUModule(SmallCNN(num_classes=10), original_ckpt=str(path))
    assert same_weights(module.backbone, net)


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "model.", "module._orig_mod."])
def test_strips_wrapper_prefixes(original_state, tmp_path, prefix):
    net, _ = original_state
    path = tmp_path / "prefixed.pt"
    torch.save({prefix + k: v for k, v in net.state_dict().items()}, path)
    module = NatMUModule(SmallCNN(num_classes=10), original_ckpt=str(path))
    assert same_weights(module.backbone, net)


def test_finds_the_network_under_one_attribute_of_a_users_module(original_state, tmp_path):
    """A user's own LightningModule: the network under ``encoder.`` beside other state."""
    net, _ = original_state
    user = {f"encoder.{k}": v for k, v in net.state_dict().items()}
    user["criterion.weight"] = torch.ones(10)
    path = tmp_path / "user.ckpt"
    torch.save({"state_dict": user, "epoch": 3}, path)
    module = NatMUModule(SmallCNN(num_classes=10), original_ckpt=str(path))
    assert same_weights(module.backbone, net)

    # the network and its EMA copy: ambiguous, refused with the prefixes named
    user.update({f"ema.{k}": v + 1 for k, v in net.state_dict().items()})
    torch.save({"state_dict": user}, path)
    with pytest.raises(ValueError, match=r"under several prefixes, \['encoder\.', 'ema\.'\]") as raised:
        NatMUModule(SmallCNN(num_classes=10), original_ckpt=str(path))
    n = len(net.state_dict())
    assert f"encoder. ({n} tensors), criterion. (1 tensors), ema. ({n} tensors)" in str(raised.value)

    # checkpoint_prefix settles it: either copy, by name (with or without the trailing dot)
    for prefix, shift in (("ema", 1), ("encoder.", 0)):
        module = NatMUModule(SmallCNN(num_classes=10), original_ckpt=str(path), checkpoint_prefix=prefix)
        for name, tensor in net.state_dict().items():
            assert torch.equal(module.backbone.state_dict()[name], tensor + shift), (prefix, name)
    assert module.hparams["checkpoint_prefix"] == "encoder."


def test_a_checkpoint_prefix_that_matches_nothing_or_does_not_fit_is_refused(original_state, tmp_path):
    net, _ = original_state
    path = tmp_path / "user.ckpt"
    torch.save({"state_dict": {f"model.net.{k}": v for k, v in net.state_dict().items()}}, path)
    n = len(net.state_dict())
    with pytest.raises(ValueError, match=rf"checkpoint_prefix 'net\.' matches no tensor.*model\. \({n} tensors\)"):
        NatMUModule(SmallCNN(num_classes=10), original_ckpt=str(path), checkpoint_prefix="net")
    with pytest.raises(ValueError, match=r"does not fit the SmallCNN backbone: missing .*expects e\.g\. features"):
        NatMUModule(SmallCNN(num_classes=10), original_ckpt=str(path), checkpoint_prefix="model.net.features")
    module = NatMUModule(SmallCNN(num_classes=10), original_ckpt=str(path), checkpoint_prefix="model.net")
    assert same_weights(module.backbone, net)


def test_loads_lightning_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = ClassifierModule(SmallCNN(num_classes=10))
    trainer = quiet_trainer(tmp_path, limit_val_batches=None, max_steps=1)
    trainer.fit(model, datamodule=ForgetRemainDataModule(batch_size=32))
    path = tmp_path / "original.ckpt"
    trainer.save_checkpoint(path)
    module = NatMUModule(SmallCNN(num_classes=10), original_ckpt=str(path))
    assert same_weights(module.backbone, model.backbone)


def test_bad_checkpoints_named_clearly(tmp_path, original_state):
    _, good = original_state
    with pytest.raises(ValueError, match="original_ckpt .* does not exist"):
        NatMUModule(SmallCNN(), original_ckpt=str(tmp_path / "missing.ckpt"))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        NatMUModule(SmallCNN(), original_ckpt=str(truncated))
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        NatMUModule(SmallCNN(), original_ckpt=str(text))
    other_arch = tmp_path / "resnet.pt"
    torch.save(ResNet18(num_classes=10, in_channels=1, mean=(0.3,), std=(0.4,)).state_dict(), other_arch)
    with pytest.raises(ValueError, match="does not fit the SmallCNN backbone") as raised:
        NatMUModule(SmallCNN(), original_ckpt=str(other_arch))
    assert "The file's keys start with: conv1. (1 tensors), bn1. (5 tensors)" in str(raised.value)
    with pytest.raises(ValueError, match="shape mismatch"):
        NatMUModule(SmallCNN(num_classes=7), original_ckpt=str(good))
    with pytest.raises(ValueError, match="original_ckpt"):
        NatMUModule(SmallCNN(), original_ckpt="")


def test_reinit_classifier_changes_only_the_final_weights_when_a_fit_starts(original_state):
    net, path = original_state
    torch.manual_seed(1)
    module = NatMUModule(SmallCNN(num_classes=10), original_ckpt=str(path), reinit_classifier=True)
    # Constructed: still the original model (the hybrid plan ranks classes with its head).
    for (name, a), b in zip(module.backbone.state_dict().items(), net.state_dict().values()):
        assert torch.equal(a, b), name
    module.setup("validate")
    assert torch.equal(module.backbone.fc.weight, net.fc.weight)
    module.setup("fit")
    # Then the authors' init_linear: new Xavier-normal weights, the bias left alone.
    for (name, a), b in zip(module.backbone.state_dict().items(), net.state_dict().values()):
        assert torch.equal(a, b) != (name == "fc.weight"), name
    assert torch.equal(module.backbone.fc.bias, net.fc.bias)
    expected_std = math.sqrt(2.0) * math.sqrt(2.0 / sum(net.fc.weight.shape))
    assert module.backbone.fc.weight.std().item() == pytest.approx(expected_std, rel=0.15)


def test_lr_factor_schedules():
    cosine = LrFactor("cosine", total_steps=100, warmup_steps=0)
    assert cosine(0) == 1.0 and cosine(100) == pytest.approx(0.0, abs=1e-12)
    assert cosine(50) == pytest.approx(0.5)
    step = LrFactor("step", total_steps=100, warmup_steps=10, milestones=(0.6, 0.8))
    assert step(0) == pytest.approx(0.1) and step(9) == 1.0
    assert step(59) == 1.0 and step(60) == pytest.approx(0.1) and step(80) == pytest.approx(0.01)


def test_natmu_trains_with_adamw_cosine_to_zero(original_state, tmp_path):
    _, path = original_state
    module = NatMUModule(SmallCNN(num_classes=10), original_ckpt=str(path), recipe={"lr": 1e-3, "weight_decay": 2e-3})
    trainer = quiet_trainer(tmp_path, max_epochs=2)
    trainer.fit(module, datamodule=ForgetRemainDataModule(batch_size=128))
    optimizer = trainer.optimizers[0]
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.param_groups[0]["weight_decay"] == 2e-3
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"lr": 0.0}, "lr"),
        ({"lr": math.nan}, "lr"),
        ({"optimizer": "adam"}, "optimizer"),
        ({"lr_schedule": "linear"}, "lr_schedule"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"momentum": True}, "momentum"),
        ({"betas": (0.9,)}, "betas"),
        ({"betas": (0.9, 1.0)}, "betas"),
        ({"milestones": (0.6, 1.5)}, "milestones"),
        ({"learning_rate": 0.1}, "no field"),
    ],
)
def test_bad_optimisation_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ClassifierModule(SmallCNN(), recipe=kwargs)
    if "learning_rate" not in kwargs:
        with pytest.raises(ValueError, match=match):
            Recipe(**kwargs)


def test_a_recipe_mapping_changes_only_what_it_names_and_reloads_from_a_checkpoint(tmp_path):
    """Each method's default recipe is its own; a dict (YAML, Python, a checkpoint's
    hyperparameters) changes only the fields it names."""
    from natmu_lightning import FTModule
    from natmu_lightning.methods.ft import FT_RECIPE
    from natmu_lightning.natmu.module import NATMU_RECIPE

    torch.save(SmallCNN(num_classes=10).state_dict(), tmp_path / "original.pt")
    original = str(tmp_path / "original.pt")
    assert NatMUModule(SmallCNN(num_classes=10), original_ckpt=original).recipe == NATMU_RECIPE
    ft = FTModule(SmallCNN(num_classes=10), original_ckpt=original, recipe={"lr": 0.5})
    assert ft.recipe == FT_RECIPE.replace(lr=0.5) and ft.recipe.optimizer == "sgd"
    assert ft.hparams["recipe"] == {**FT_RECIPE.as_dict(), "lr": 0.5}
    assert ft.hparams_initial["recipe"] == ft.hparams["recipe"]  # what loggers write to hparams.yaml
    saved = tmp_path / "hparams.yaml"
    save_hparams_to_yaml(saved, ft.hparams_initial)
    assert yaml.safe_load(saved.read_text())["recipe"] == {**FT_RECIPE.as_dict(), "lr": 0.5}
    trainer = pl.Trainer(accelerator="cpu", max_steps=1, logger=False, default_root_dir=tmp_path)
    trainer.fit(ft, datamodule=ForgetRemainDataModule(batch_size=64, stream="remain"))
    trainer.save_checkpoint(tmp_path / "ft.ckpt")
    assert torch.load(tmp_path / "ft.ckpt", weights_only=True)["hyper_parameters"]["recipe"]["lr"] == 0.5
    reloaded = FTModule.load_from_checkpoint(tmp_path / "ft.ckpt", backbone=SmallCNN(num_classes=10))
    assert reloaded.recipe == ft.recipe


def test_backbone_that_cannot_take_the_images_fails_before_training(tmp_path):
    rgb = ForgetRemainDataModule(source=SyntheticImages(channels=3, height=8, width=8), batch_size=8)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, logger=False, default_root_dir=tmp_path)
    with pytest.raises(ValueError, match="cannot take images of shape"):
        trainer.fit(ClassifierModule(SmallCNN(in_channels=1)), datamodule=rgb)
    five = ForgetRemainDataModule(source=SyntheticImages(num_classes=5, channels=1, height=8, width=8), batch_size=8)
    with pytest.raises(ValueError, match="dataset has 5 classes"):
        trainer.fit(ClassifierModule(SmallCNN(num_classes=10)), datamodule=five)


def test_nan_loss_stops_with_step_and_advice(tmp_path):
    class Exploding(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return torch.full((x.shape[0], 10), math.nan) + self.w

    trainer = quiet_trainer(tmp_path, enable_checkpointing=True, limit_val_batches=None, max_epochs=1)
    with pytest.raises(FloatingPointError, match="step 0.*smaller learning rate"):
        trainer.fit(ClassifierModule(Exploding()), datamodule=ForgetRemainDataModule(batch_size=32))


def test_a_checkpoint_from_before_the_recipe_loads_its_weights_and_says_what_it_ignores(tmp_path):
    torch.save(SmallCNN(num_classes=10).state_dict(), tmp_path / "original.pt")
    module = NatMUModule(SmallCNN(num_classes=10), original_ckpt=str(tmp_path / "original.pt"))
    hparams = {
        "original_ckpt": str(tmp_path / "original.pt"),
        "optimizer": "adamw",
        "lr": 0.5,
        "reinit_classifier": False,
    }
    torch.save(
        {"state_dict": module.state_dict(), "hyper_parameters": hparams, "pytorch-lightning_version": pl.__version__},
        tmp_path / "old.ckpt",
    )
    with pytest.warns(UserWarning, match=r"ignores \['lr', 'optimizer'\].*written before 0.2"):
        reloaded = NatMUModule.load_from_checkpoint(tmp_path / "old.ckpt", backbone=SmallCNN(num_classes=10))
    assert reloaded.recipe.lr == 1e-3
    for name, tensor in module.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], tensor), name


def test_forwarded_arguments_are_named_in_the_cli_and_a_misspelt_one_is_refused(original_state, capsys):
    """Methods forward ``reinit_classifier`` and ``checkpoint_prefix`` to the base as ``**kwargs``:
    the CLI still lists them (jsonargparse follows the call), and a typo is a TypeError."""
    from natmu_lightning.cli import main

    _, path = original_state
    with pytest.raises(TypeError, match="reinit_clasifier"):
        NatMUModule(SmallCNN(num_classes=10), original_ckpt=str(path), reinit_clasifier=True)
    module = NatMUModule(SmallCNN(num_classes=10), original_ckpt=str(path), reinit_classifier=True)
    assert module.hparams["reinit_classifier"] is True and "reinit_clasifier" not in module.hparams
    for name in ("NatMUModule", "SalUnModule"):  # SalUn forwards through RLModule to the base
        with pytest.raises(SystemExit):
            main(["fit", "--model.help", f"natmu_lightning.{name}"])
        shown = capsys.readouterr().out
        assert "--model.reinit_classifier" in shown and "--model.checkpoint_prefix" in shown, name
    assert "--model.relabel" in shown
    with pytest.warns(UserWarning, match=r"ignores \['lr'\].*recipe"):
        NatMUModule(SmallCNN(num_classes=10), original_ckpt=str(path), lr=0.03)


class _StepLosses(pl.Callback):
    """Every step's loss, as training_step returned it."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def test_training_values_are_logged_on_the_steps_the_loggers_write(tmp_path):
    """``train/loss`` reaches the CSV logger every ``log_every_n_steps`` steps with that step's
    loss, and the epoch's last step's loss is what callbacks read at the epoch's end."""
    from pytorch_lightning.loggers import CSVLogger

    torch.manual_seed(0)
    module = ClassifierModule(SmallCNN(width=4), stream="full")
    losses = _StepLosses()
    logger = CSVLogger(str(tmp_path), name="logs")
    trainer = quiet_trainer(tmp_path, max_epochs=2, logger=logger, log_every_n_steps=7, callbacks=[losses])
    logged_at: list[int] = []
    log = module.log
    module.log = lambda *args, **kwargs: (logged_at.append(module.global_step), log(*args, **kwargs))  # type: ignore[method-assign]
    trainer.fit(module, datamodule=ForgetRemainDataModule(batch_size=128))  # 10 steps an epoch
    assert logged_at == [6, 9, 13, 19]  # the loggers' steps and each epoch's last: not every step
    rows = [row.split(",") for row in (tmp_path / "logs" / "version_0" / "metrics.csv").read_text().splitlines()]
    column, step_column = rows[0].index("train/loss"), rows[0].index("step")
    logged = {int(row[step_column]): float(row[column]) for row in rows[1:] if row[column]}
    assert sorted(logged) == [6, 13]  # (step + 1) % 7 == 0, steps counted from 0
    assert all(logged[step] == pytest.approx(losses.losses[step], rel=1e-6) for step in logged)
    assert float(trainer.callback_metrics["train/loss"]) == pytest.approx(losses.losses[-1], rel=1e-6)
    assert trainer.progress_bar_metrics["train/loss"] == pytest.approx(losses.losses[-1], abs=1e-3)  # on the CPU


def test_every_method_takes_reinit_classifier_and_checkpoint_prefix():
    """One vocabulary: every module of the package names both in its signature (or forwards
    them to the base), and SSD, which never trains, refuses a re-initialised head."""
    import inspect

    import natmu_lightning
    from natmu_lightning.methods.base import BackboneModule
    from natmu_lightning.methods.ssd import SSDModule

    modules = [
        obj for obj in vars(natmu_lightning).values() if inspect.isclass(obj) and issubclass(obj, BackboneModule)
    ]
    assert len(modules) >= 11  # the classifier, NatMU and the nine baselines
    for module in modules:
        parameters = inspect.signature(module.__init__).parameters
        forwards = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        assert forwards or {"reinit_classifier", "checkpoint_prefix"} <= set(parameters), module.__name__
    with pytest.raises(ValueError, match="never trains"):
        SSDModule(SmallCNN(num_classes=10), original_ckpt="unused.pt", reinit_classifier=True)


def test_the_old_name_train_on_still_sets_the_stream_with_a_warning(tmp_path):
    """0.2.0's configs and checkpoints say ``train_on``; it is read (with a warning) until 0.3.0."""
    with pytest.warns(UserWarning, match="old name of stream='remain'"):
        module = ClassifierModule(SmallCNN(width=4), train_on="remain")
    assert module.stream == "remain" and module.training_needs().stream == "remain"
    with pytest.raises(ValueError, match="stream"):
        ClassifierModule(SmallCNN(width=4), stream="everything")  # type: ignore[arg-type]
