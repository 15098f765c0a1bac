"""Gradient-based baselines (FT, RL, GA, NegGrad+, SalUn, l1-sparse): CLI runs and invariants.

Every digits config runs through the CLI for a few steps against original/Retrain
checkpoints trained once per session (tests/conftest.py; briefly: the tests check mechanics, not quality).
Each method then gets one invariant a wrong implementation would break.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from natmu_lightning.backbones import SmallCNN
from natmu_lightning.checkpoints import read_state_dict
from natmu_lightning.cli import main
from natmu_lightning.data import ForgetRemainDataModule
from natmu_lightning.data.transforms import to_unit_float
from natmu_lightning.methods.ft import FTModule
from natmu_lightning.methods.ga import GAModule
from natmu_lightning.methods.l1_sparse import L1SparseModule, l1_weight
from natmu_lightning.methods.neggrad import NegGradPlusModule
from natmu_lightning.methods.rl import RLModule, random_other_labels
from natmu_lightning.methods.salun import SalUnModule, saliency_masks
from natmu_lightning.predict import predict_logits
from tests.tiny_runs import DIGITS_ORIGINAL, digits_args, quiet_trainer

METHODS = ["ft", "rl", "ga", "neggrad", "salun", "l1_sparse"]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


@pytest.fixture(scope="module")
def original(digits_checkpoints: Path) -> str:
    return str(digits_checkpoints / DIGITS_ORIGINAL)


def original_state(path: str) -> dict[str, torch.Tensor]:
    return read_state_dict(path, "original_ckpt")


def fit(
    module: pl.LightningModule, tmp_path: Path, max_steps: int = -1, max_epochs: int = 10, callbacks=(), **dm_kwargs
) -> ForgetRemainDataModule:
    """Train ``module`` on digits (batch 64, no augmentation) without evaluator or logger."""
    dm = ForgetRemainDataModule(**{"batch_size": 64, "crop_padding": 0, "horizontal_flip": False, **dm_kwargs})
    trainer = quiet_trainer(tmp_path, max_steps=max_steps, max_epochs=max_epochs, callbacks=list(callbacks))
    trainer.fit(module, datamodule=dm)
    return dm


# ------------------------------------------------------------------------------ CLI runs
@pytest.mark.parametrize("method", METHODS)
def test_digits_config_runs(method: str, digits_workdir: Path, tmp_path: Path) -> None:
    cli = main(
        [
            "fit",
            *digits_args(method),
            "--trainer.max_epochs",
            "1",
            "--trainer.max_steps",
            "3",
            "--trainer.limit_val_batches",
            "0",
            *QUIET,
        ]
    )
    assert cli.trainer.global_step == 3
    assert (
        type(cli.model).__name__
        == {
            "ft": "FTModule",
            "rl": "RLModule",
            "ga": "GAModule",
            "neggrad": "NegGradPlusModule",
            "salun": "SalUnModule",
            "l1_sparse": "L1SparseModule",
        }[method]
    )
    assert cli.datamodule.stream == cli.model.stream
    record = json.loads((Path(cli.trainer.log_dir) / "unlearning_metrics.json").read_text())
    for key in ("forget_acc", "remain_acc", "test_acc", "mia_entropy", "avg_gap"):
        assert math.isfinite(record[key]), key
    assert record["global_step"] == 3 and "reference" in record


# ------------------------------------------------------------------------------ bad values
@pytest.mark.parametrize("cls,kwargs,match", [
    (SalUnModule, {"saliency_fraction": 0.0}, "saliency_fraction"),
    (SalUnModule, {"saliency_fraction": 1.5}, "saliency_fraction"),
    (SalUnModule, {"saliency_fraction": -0.1}, "saliency_fraction"),
    (SalUnModule, {"saliency_fraction": math.nan}, "saliency_fraction"),
    (NegGradPlusModule, {"alpha": -0.1}, "alpha"),
    (NegGradPlusModule, {"alpha": 1.01}, "alpha"),
    (NegGradPlusModule, {"alpha": math.nan}, "alpha"),
    (L1SparseModule, {"alpha": -1e-4}, "alpha"),
    (L1SparseModule, {"alpha": math.inf}, "alpha"),
    (RLModule, {"recipe": {"weight_decay": -1.0}}, "weight_decay"),
])  # fmt: skip
def test_bad_values_raise(cls, kwargs, match, original: str) -> None:
    with pytest.raises(ValueError, match=match):
        cls(SmallCNN(num_classes=10), original_ckpt=original, **kwargs)


@pytest.mark.parametrize("cls", [FTModule, RLModule, GAModule, NegGradPlusModule, SalUnModule, L1SparseModule])
def test_original_ckpt_required(cls) -> None:
    with pytest.raises(ValueError, match="original_ckpt"):
        cls(SmallCNN(num_classes=10), original_ckpt="")


def test_bad_value_in_config_stops_before_training(digits_workdir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="saliency_fraction must lie in"):
        main(
            [
                "fit",
                *digits_args("salun"),
                "--model.init_args.saliency_fraction",
                "0",
                *QUIET,
            ]
        )
    assert not list(tmp_path.rglob("unlearning_metrics.json"))


# ------------------------------------------------------------------------------ FT
class IndexSpy(pl.Callback):
    def __init__(self) -> None:
        self.indices: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.indices.append(batch["index"].cpu())


def test_ft_never_sees_a_forget_sample(original: str, tmp_path: Path) -> None:
    spy = IndexSpy()
    dm = fit(FTModule(SmallCNN(num_classes=10), original_ckpt=original), tmp_path, max_epochs=1, callbacks=[spy])
    seen = torch.cat(spy.indices)
    assert not torch.isin(seen, dm.forget_indices).any()
    assert torch.equal(seen.sort().values, dm.remain_indices.sort().values)  # one epoch = every remaining sample once


# ------------------------------------------------------------------------------ RL
def test_random_other_labels_never_the_true_one_and_uniform() -> None:
    generator = torch.Generator().manual_seed(0)
    targets = torch.arange(10).repeat(2000)
    new = random_other_labels(targets, 10, generator)
    assert not (new == targets).any()
    for c in range(10):
        counts = torch.bincount(new[targets == c], minlength=10)
        assert counts[c] == 0
        others = counts[torch.arange(10) != c].float()
        assert (others > 0).all() and (others - 2000 / 9).abs().max() < 80  # ~6 standard deviations
    with pytest.raises(ValueError, match="2 classes"):
        random_other_labels(targets, 1)


def spy_on_labels(module: RLModule) -> list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Record (epoch, index, target, is_forget, trained label) of every training row."""
    seen = []
    plain = module.training_targets

    def spy(batch, is_forget, num_classes):
        labels = plain(batch, is_forget, num_classes)
        seen.append(
            (module.current_epoch, batch["index"].clone(), batch["target"].clone(), is_forget.clone(), labels.clone())
        )
        return labels

    module.training_targets = spy
    return seen


def labels_by_epoch(seen) -> dict[int, dict[int, int]]:
    """{epoch: {forgetting sample's training index: its trained label}}."""
    out: dict[int, dict[int, int]] = {}
    for epoch, index, _, is_forget, labels in seen:
        out.setdefault(epoch, {}).update(zip(index[is_forget].tolist(), labels[is_forget].tolist()))
    return out


def test_rl_relabels_exactly_the_forget_rows_in_training(original: str, tmp_path: Path) -> None:
    module = RLModule(SmallCNN(num_classes=10), original_ckpt=original, recipe={"lr": 1e-3})
    seen = spy_on_labels(module)
    fit(module, tmp_path, max_steps=6)
    _, _, targets, is_forget, labels = (torch.cat(parts) if i else parts for i, parts in enumerate(zip(*seen)))
    assert is_forget.any() and (~is_forget).any()
    assert torch.equal(labels[~is_forget], targets[~is_forget])
    assert (labels[is_forget] != targets[is_forget]).all()


def test_rl_keeps_one_seeded_wrong_label_per_forgetting_sample(original: str, tmp_path: Path) -> None:
    """The NatMU authors draw one wrong label per forgetting sample, once (their
    get_random_idx_of_retainData): the same label in every epoch, never the true class,
    and the same table in a second run with the same seed; per_batch redraws it."""
    module = RLModule(SmallCNN(num_classes=10), original_ckpt=original, recipe={"lr": 1e-4})
    seen = spy_on_labels(module)
    dm = fit(module, tmp_path, max_epochs=3)
    epochs = labels_by_epoch(seen)
    forget = set(dm.forget_indices.tolist())
    assert sorted(epochs) == [0, 1, 2] and all(set(labels) == forget for labels in epochs.values())
    assert epochs[0] == epochs[1] == epochs[2]
    targets = dm.train_targets
    assert all(label != int(targets[index]) for index, label in epochs[0].items())
    # every wrong class is used (130 samples, 9 choices each): a draw, not a fixed shift
    shifts = {(label - int(targets[index])) % 10 for index, label in epochs[0].items()}
    assert shifts == set(range(1, 10))

    again = RLModule(SmallCNN(num_classes=10), original_ckpt=original, recipe={"lr": 1e-4})
    seen_again = spy_on_labels(again)
    fit(again, tmp_path, max_steps=3)
    first = labels_by_epoch(seen_again)[0]
    assert first and all(epochs[0][index] == label for index, label in first.items())

    redrawn = RLModule(SmallCNN(num_classes=10), original_ckpt=original, recipe={"lr": 1e-4}, relabel="per_batch")
    seen_redrawn = spy_on_labels(redrawn)
    fit(redrawn, tmp_path, max_epochs=2)
    per_batch = labels_by_epoch(seen_redrawn)
    assert per_batch[0] != per_batch[1]
    assert all(label != int(targets[index]) for labels in per_batch.values() for index, label in labels.items())


def test_rl_fixed_labels_need_the_forget_set(original: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="relabel must be 'fixed' or 'per_batch'"):
        RLModule(SmallCNN(num_classes=10), original_ckpt=original, relabel="once")
    plain = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.rand(4, 1, 8, 8), torch.arange(4)))
    trainer = quiet_trainer(tmp_path, limit_val_batches=None, max_steps=1)
    with pytest.raises(ValueError, match="relabel='per_batch'"):
        trainer.fit(RLModule(SmallCNN(num_classes=10), original_ckpt=original), train_dataloaders=plain)


# ------------------------------------------------------------------------------ GA
def forget_loss(backbone: nn.Module, dm: ForgetRemainDataModule) -> float:
    images, targets = dm.evaluation_splits()["forget"]
    return float(nn.functional.cross_entropy(predict_logits(backbone, images), targets))


def test_ga_raises_the_forget_loss(original: str, tmp_path: Path) -> None:
    before = SmallCNN(num_classes=10)
    before.load_state_dict(original_state(original))
    module = GAModule(
        SmallCNN(num_classes=10),
        original_ckpt=original,
        recipe={"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.0},
    )
    dm = fit(module, tmp_path, max_steps=4)
    assert dm.stream == "forget"
    assert forget_loss(module.backbone, dm) > forget_loss(before, dm) + 1e-3


# ------------------------------------------------------------------------------ NegGrad+
def test_neggrad_plus_loss_matches_the_formula(original: str) -> None:
    """A paired batch: the remaining rows and the forget rows go through the model in two
    forward passes (train mode, so each with its own batch-norm statistics), as train_negrad."""
    torch.manual_seed(0)
    module = NegGradPlusModule(SmallCNN(num_classes=10), original_ckpt=original, alpha=0.8).train()
    reference = copy.deepcopy(module.backbone)
    batch = {"image": torch.rand(6, 1, 8, 8), "target": torch.tensor([0, 1, 2, 3, 4, 5]), "num_remain": 4}
    with torch.no_grad(), warnings.catch_warnings():  # self.log without a trainer warns
        warnings.simplefilter("ignore")
        loss = module.training_step(batch, 0)
        remain_logits, forget_logits = reference(batch["image"][:4]), reference(batch["image"][4:])
    ce = nn.functional.cross_entropy
    expected = 0.8 * ce(remain_logits, batch["target"][:4]) - 0.2 * ce(forget_logits, batch["target"][4:])
    assert torch.allclose(loss, expected, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="'paired' stream"):
        module.training_step({"image": batch["image"], "target": batch["target"]}, 0)


def neggrad_as_the_authors(
    original: str,
    dm: ForgetRemainDataModule,
    epochs: int,
    batch_size: int,
    forget_batch_size: int,
    alpha: float,
    lr: float,
    seed: int = 0,
    notebook_weight_decay: float | None = None,
) -> tuple[nn.Module, int]:
    """train_negrad re-stated (SCRUB's thirdparty/repdistiller/helper/loops.py): per epoch
    ``zip(retain_loader, cycle(forget_loader))``, loss ``alpha * CE(retain) - (1 - alpha) *
    CE(forget)``, plain SGD, train mode. The batch order is the datamodule's documented one
    (per epoch a seeded permutation of the remaining set, then one of the forget set).

    With ``notebook_weight_decay``: run_neggrad_epoch of small_scale_unlearning.ipynb instead,
    ``model.eval()`` and ``alpha * (CE(retain) + l2_penalty(model, model_init, wd)) - (1 - alpha)
    * CE(forget)``, where ``l2_penalty`` is ``wd / 2 * sum((p - p_init) ** 2)``."""
    model = SmallCNN(num_classes=10)
    model.load_state_dict(original_state(original))
    model_init = copy.deepcopy(model)
    model.eval() if notebook_weight_decay is not None else model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.0, weight_decay=0.0)
    images, targets = dm._loaded().train.images, dm.train_targets
    steps = 0
    for epoch in range(epochs):
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        retain_loader = dm.remain_indices[torch.randperm(dm.remain_indices.numel(), generator=generator)].split(
            batch_size
        )
        forget_loader = dm.forget_indices[torch.randperm(dm.forget_indices.numel(), generator=generator)].split(
            forget_batch_size
        )
        for retain, delete in zip(retain_loader, itertools.cycle(forget_loader)):
            output, del_output = model(to_unit_float(images[retain])), model(to_unit_float(images[delete]))
            remain_loss = nn.functional.cross_entropy(output, targets[retain])
            if notebook_weight_decay is not None:
                l2_loss = sum(
                    (p - p_init).pow(2).sum() for p, p_init in zip(model.parameters(), model_init.parameters())
                )
                remain_loss = remain_loss + l2_loss * (notebook_weight_decay / 2.0)
            loss = alpha * remain_loss - (1 - alpha) * nn.functional.cross_entropy(del_output, targets[delete])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
    return model, steps


def test_neggrad_plus_pairs_every_remaining_batch_with_a_cycled_forget_batch(original: str, tmp_path: Path) -> None:
    module = NegGradPlusModule(
        SmallCNN(num_classes=10),
        original_ckpt=original,
        alpha=0.9,
        forget_batch_size=32,
        recipe={"optimizer": "sgd", "lr": 0.01, "momentum": 0.0, "weight_decay": 0.0, "lr_schedule": "constant"},
    )
    dm = fit(module, tmp_path, max_epochs=2, batch_size=100)
    assert dm.stream == "paired"
    reference, steps = neggrad_as_the_authors(original, dm, 2, 100, 32, alpha=0.9, lr=0.01)
    assert steps == 2 * math.ceil(dm.remain_indices.numel() / 100)  # more steps than forget batches: cycled
    for (name, ours), theirs in zip(module.backbone.state_dict().items(), reference.state_dict().values()):
        assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-5), name


def test_neggrad_plus_as_the_notebook_runs_it(original: str, tmp_path: Path) -> None:
    """eval_mode and anchor_decay give run_neggrad_epoch: the batch-norm statistics stay the
    original's, and the weights match the notebook's loop; without them they do not."""
    recipe = {"optimizer": "sgd", "lr": 0.01, "momentum": 0.0, "weight_decay": 0.0, "lr_schedule": "constant"}
    module = NegGradPlusModule(
        SmallCNN(num_classes=10),
        original_ckpt=original,
        alpha=0.9,
        forget_batch_size=32,
        eval_mode=True,
        anchor_decay=0.1,
        recipe=recipe,
    )
    dm = fit(module, tmp_path, max_epochs=2, batch_size=100)
    reference, _ = neggrad_as_the_authors(original, dm, 2, 100, 32, alpha=0.9, lr=0.01, notebook_weight_decay=0.1)
    for (name, ours), theirs in zip(module.backbone.state_dict().items(), reference.state_dict().values()):
        assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-5), name
    before = original_state(original)
    running = [key for key in before if key.endswith("running_mean")]
    assert running and all(torch.equal(module.backbone.state_dict()[key], before[key]) for key in running)
    train_negrad, _ = neggrad_as_the_authors(original, dm, 2, 100, 32, alpha=0.9, lr=0.01)
    assert not all(
        torch.allclose(a, b, rtol=1e-4, atol=1e-5)
        for a, b in zip(train_negrad.state_dict().values(), reference.state_dict().values())
    )


def test_neggrad_plus_refuses_a_negative_anchor_decay(original: str) -> None:
    with pytest.raises(ValueError, match="anchor_decay"):
        NegGradPlusModule(SmallCNN(num_classes=10), original_ckpt=original, anchor_decay=-0.1)


# ------------------------------------------------------------------------------ l1-sparse
def test_l1_weight_decays_linearly_to_zero() -> None:
    assert [l1_weight(2.0, s, 4) for s in range(5)] == [2.0, 1.5, 1.0, 0.5, 0.0]
    assert l1_weight(2.0, 10, 4) == 0.0
    epochs, per_epoch = 5, 7  # the reference code's per-epoch value at every epoch start
    for e in range(epochs):
        assert l1_weight(3e-4, e * per_epoch, epochs * per_epoch) == pytest.approx(3e-4 * (1 - e / epochs))


def test_l1_sparse_loss_includes_the_penalty(original: str) -> None:
    torch.manual_seed(0)
    module = L1SparseModule(SmallCNN(num_classes=10), original_ckpt=original, alpha=1e-3, l1_schedule="step").eval()
    module.total_steps = 10
    batch = {"image": torch.rand(5, 1, 8, 8), "target": torch.tensor([0, 1, 2, 3, 4])}
    with torch.no_grad(), warnings.catch_warnings():  # self.log without a trainer warns
        warnings.simplefilter("ignore")
        loss = module.training_step(batch, 0)
        ce = nn.functional.cross_entropy(module(batch["image"]), batch["target"])
    l1 = sum(float(p.detach().abs().sum()) for p in module.backbone.parameters())
    assert l1 > 0 and float(loss) == pytest.approx(float(ce) + 1e-3 * l1, rel=1e-5)


def test_l1_sparse_weight_follows_the_schedule_in_a_run(original: str, tmp_path: Path) -> None:
    weights = []

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            weights.append(pl_module.current_l1_weight())

    module = L1SparseModule(
        SmallCNN(num_classes=10),
        original_ckpt=original,
        alpha=1e-3,
        recipe={"optimizer": "adamw", "lr": 1e-3},
        l1_schedule="step",
    )
    fit(module, tmp_path, max_steps=4, callbacks=[Record()])
    assert module.total_steps == 4
    assert weights == pytest.approx([1e-3, 7.5e-4, 5e-4, 2.5e-4])
    assert module.current_l1_weight() == 0.0  # global_step == total_steps: the end of the run


def test_l1_sparse_default_is_the_authors_per_epoch_staircase(original: str, tmp_path: Path) -> None:
    """FT_iter: current_alpha = alpha * (1 - epoch / (unlearn_epochs - no_l1_epochs)), constant
    within an epoch, 0 in the last no_l1_epochs epochs."""
    weights: dict[int, set[float]] = {}

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            weights.setdefault(trainer.current_epoch, set()).add(pl_module.current_l1_weight())

    module = L1SparseModule(SmallCNN(num_classes=10), original_ckpt=original, alpha=1e-3, no_l1_epochs=1)
    assert module.hparams.l1_schedule == "epoch"
    fit(module, tmp_path, max_epochs=4, callbacks=[Record()])
    assert weights == {0: {1e-3}, 1: {1e-3 * (1 - 1 / 3)}, 2: {1e-3 * (1 - 2 / 3)}, 3: {0}}
    with pytest.raises(ValueError, match="l1_schedule"):
        L1SparseModule(SmallCNN(num_classes=10), original_ckpt=original, l1_schedule="batch")


# ------------------------------------------------------------------------------ SalUn
def check_salun(module: SalUnModule, original: str, fraction: float) -> None:
    state = original_state(original)
    masks = module.saliency
    assert masks is not None and set(masks) == {n for n, _ in module.backbone.named_parameters()}
    total = sum(m.numel() for m in masks.values())
    assert sum(int(m.sum()) for m in masks.values()) == int(total * fraction)
    changed = 0
    for name, p in module.backbone.named_parameters():
        mask, start = masks[name], state[name]
        assert torch.equal(p.detach()[~mask], start[~mask]), f"{name}: an unmasked weight moved"
        changed += int((p.detach()[mask] != start[mask]).sum())
    assert changed > 0
    # Batch-norm running statistics are buffers: they keep updating (documented behaviour).
    assert not torch.equal(
        module.backbone.state_dict()["features.0.1.running_mean"], state["features.0.1.running_mean"]
    )


def independent_saliency(original: str, dm: ForgetRemainDataModule) -> dict[str, torch.Tensor]:
    net = SmallCNN(num_classes=10)
    net.load_state_dict(original_state(original))
    net.eval()
    images, targets = dm.evaluation_splits()["forget"]
    nn.functional.cross_entropy(net(images.float() / 255), targets).backward()
    return {name: p.grad.abs() for name, p in net.named_parameters()}


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_salun_changes_only_the_salient_weights(optimizer: str, original: str, tmp_path: Path) -> None:
    module = SalUnModule(
        SmallCNN(num_classes=10),
        original_ckpt=original,
        saliency_fraction=0.1,
        recipe={"optimizer": optimizer, "lr": 1e-2, "weight_decay": 0.1, "momentum": 0.9},
    )
    dm = fit(module, tmp_path, max_steps=4)
    check_salun(module, original, 0.1)
    # The mask holds the largest |gradient| of the forget loss at the ORIGINAL weights.
    grads = independent_saliency(original, dm)
    inside = torch.cat([grads[n][m] for n, m in module.saliency.items()])
    outside = torch.cat([grads[n][~m] for n, m in module.saliency.items()])
    assert float(inside.min()) >= float(outside.max()) * (1 - 1e-5)


def test_salun_resume_keeps_the_mask_and_the_original_weights(original: str, tmp_path: Path) -> None:
    kwargs = dict(original_ckpt=original, saliency_fraction=0.1, recipe={"lr": 1e-2, "weight_decay": 0.1})
    first = SalUnModule(SmallCNN(num_classes=10), **kwargs)
    dm = ForgetRemainDataModule(batch_size=64, crop_padding=0, horizontal_flip=False)
    trainer = quiet_trainer(tmp_path, max_steps=2)
    trainer.fit(first, datamodule=dm)
    ckpt = tmp_path / "mid.ckpt"
    trainer.save_checkpoint(ckpt)

    resumed = SalUnModule(SmallCNN(num_classes=10), **kwargs)
    trainer = quiet_trainer(tmp_path, max_steps=4)
    trainer.fit(
        resumed,
        datamodule=ForgetRemainDataModule(batch_size=64, crop_padding=0, horizontal_flip=False),
        ckpt_path=str(ckpt),
    )
    assert trainer.global_step == 4
    assert all(torch.equal(first.saliency[n], resumed.saliency[n]) for n in first.saliency)
    check_salun(resumed, original, 0.1)


def test_saliency_masks_global_threshold() -> None:
    grads = [torch.tensor([[0.5, -4.0], [0.0, 1.0]]), torch.tensor([-3.0, 0.1, 2.0])]
    masks = saliency_masks(grads, 3 / 7)  # int(7 * 3/7) = 3 entries: |-4|, |-3|, |2|
    assert masks[0].tolist() == [[False, True], [False, False]] and masks[1].tolist() == [True, False, True]
    assert all(m.all() for m in saliency_masks(grads, 1.0))
    assert sum(int(m.sum()) for m in saliency_masks(grads, 1e-9)) == 1  # at least one weight


# ------------------------------------------------------------------------------ collapse
def test_a_collapsed_run_is_flagged_and_a_shipped_natmu_run_is_not(digits_workdir: Path) -> None:
    """Gradient ascent at lr 10 destroys the model: its metrics say ``collapsed`` with the
    reason (against the original's metrics the record measured at the start);
    ``stop_on_collapse`` ends such a fit at its first evaluation. NatMU as shipped does not."""
    steps = ["--trainer.max_epochs", "3", "--trainer.limit_val_batches", "0", *QUIET]
    ga = main(["fit", *digits_args("ga"), "--model.init_args.recipe.lr", "10", *steps])
    record = json.loads((Path(ga.trainer.log_dir) / "unlearning_metrics.json").read_text())
    assert record["collapsed"] is True and "below 80% of the original's" in record["collapse_reason"]
    before = json.loads((Path(ga.trainer.log_dir) / "unlearning_record.json").read_text())["metrics_before"]
    assert record["test_acc"] < 0.8 * before["test_acc"] or record["remain_acc"] < 0.8 * before["remain_acc"]
    stopped = main(
        ["fit", *digits_args("ga"), "--model.init_args.recipe.lr", "10", "--evaluator.stop_on_collapse", "true", *steps]
    )
    assert stopped.trainer.current_epoch == 1 < 3  # stopped after the first epoch's evaluation
    natmu = main(["fit", *digits_args("natmu"), *steps])
    record = json.loads((Path(natmu.trainer.log_dir) / "unlearning_metrics.json").read_text())
    assert record["collapsed"] is False and record["collapse_reason"] is None
