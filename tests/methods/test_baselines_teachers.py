"""Bad Teacher, SCRUB and SSD baselines: frozen teachers, losses, schedules, dampening, configs."""

import json
import math
from datetime import timedelta
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.strategies import DDPStrategy
from torch import nn

from natmu_lightning.backbones import SmallCNN
from natmu_lightning.checkpoints import read_state_dict
from natmu_lightning.cli import main
from natmu_lightning.data import ForgetRemainDataModule
from natmu_lightning.data.streams import batch_fields
from natmu_lightning.data.transforms import to_unit_float
from natmu_lightning.methods.bad_teacher import BadTeacherModule, bad_teacher_loss
from natmu_lightning.methods.scrub import SCRUBModule, distill_kl
from natmu_lightning.methods.ssd import SSDModule, dampen_parameters, diagonal_importance
from natmu_lightning.methods.teachers import (
    FrozenTeachers,
    frozen_copy,
    move_teachers,
    randomly_initialised_copy,
)
from tests.tiny_runs import DIGITS_ORIGINAL, digits_args

CONFIGS = ("bad_teacher", "scrub", "ssd")  # their digits runs (tests.tiny_runs.digits_args)
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


@pytest.fixture(scope="module")
def original_ckpt(digits_checkpoints):
    return str(digits_checkpoints / DIGITS_ORIGINAL)


def quick_trainer(tmp_path, **kwargs):
    options = dict(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    options.update(kwargs)
    return pl.Trainer(**options)


def datamodule(**kwargs):
    return ForgetRemainDataModule(
        batch_size=kwargs.pop("batch_size", 64), crop_padding=0, horizontal_flip=False, **kwargs
    )


# ---------------------------------------------------------------------------- configs
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_digits_config_runs_through_cli(digits_workdir, tmp_path, name):
    cli = main(
        [
            "fit",
            *digits_args(name),
            "--trainer.max_epochs",
            "1",
            "--trainer.limit_train_batches",
            "3",
            *QUIET,
        ]
    )
    files = list(tmp_path.rglob("unlearning_metrics.json"))
    assert len(files) == 1
    record = json.loads(files[0].read_text())
    for key in ("forget_acc", "remain_acc", "test_acc", "mia_entropy", "avg_gap"):
        assert isinstance(record[key], float) and math.isfinite(record[key]), key
    assert all(math.isfinite(v) for v in record["reference"].values())
    expected = {"bad_teacher": BadTeacherModule, "scrub": SCRUBModule, "ssd": SSDModule}[name]
    assert type(cli.model) is expected
    if name == "ssd":
        assert cli.model.dampened and record["global_step"] == 0
    if name == "scrub":  # epoch 0: the forget pass (130 images, one batch of 512), then 2 min steps
        assert cli.model.step_counts[0] == {"max": 1, "min": 2}
        assert record["global_step"] == 3


@pytest.mark.parametrize(
    "override,match",
    [
        (("bad_teacher", "--model.init_args.temperature", "0"), "temperature"),
        (("scrub", "--model.init_args.alpha", "-1"), "alpha"),
        (("ssd", "--model.init_args.selection_alpha", "0"), "selection_alpha"),
    ],
)
def test_bad_values_fail_in_cli_before_training(digits_workdir, tmp_path, override, match):
    name, *args = override
    with pytest.raises(ValueError, match=match):
        main(["fit", *digits_args(name), *args, *QUIET])
    assert not list(tmp_path.rglob("unlearning_metrics.json"))


# ---------------------------------------------------------------------------- argument checks
@pytest.mark.parametrize(
    "cls,kwargs,match",
    [
        (BadTeacherModule, {"temperature": 0.0}, "temperature"),
        (BadTeacherModule, {"temperature": -2.0}, "temperature"),
        (BadTeacherModule, {"temperature": math.nan}, "temperature"),
        (BadTeacherModule, {"kl_reduction": "sum"}, "kl_reduction"),
        (SCRUBModule, {"temperature": 0.0}, "temperature"),
        (SCRUBModule, {"alpha": -0.1}, "alpha"),
        (SCRUBModule, {"gamma": -1.0}, "gamma"),
        (SCRUBModule, {"max_phase_epochs": -1}, "max_phase_epochs"),
        (SSDModule, {"selection_alpha": 0.0}, "selection_alpha"),
        (SSDModule, {"selection_alpha": -10.0}, "selection_alpha"),
        (SSDModule, {"dampening_lambda": -1.0}, "dampening_lambda"),
        (SSDModule, {"importance_batch_size": 0}, "importance_batch_size"),
        (SSDModule, {"batch_weighting": "mean"}, "batch_weighting"),
    ],
)
def test_bad_method_values_raise(original_ckpt, cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(SmallCNN(), original_ckpt=original_ckpt, **kwargs)


@pytest.mark.parametrize("cls", [BadTeacherModule, SCRUBModule, SSDModule])
def test_original_ckpt_is_required(cls):
    with pytest.raises(ValueError, match="original_ckpt"):
        cls(SmallCNN(), original_ckpt="")


def test_edge_values_are_accepted_and_mean_what_they_say(original_ckpt):
    scrub = SCRUBModule(SmallCNN(), original_ckpt=original_ckpt, alpha=0.0, gamma=0.0, max_phase_epochs=0)
    assert (scrub.hparams["alpha"], scrub.hparams["gamma"]) == (0.0, 0.0)
    assert not scrub.in_max_phase(0)  # no forgetting steps at all
    ssd = SSDModule(SmallCNN(), original_ckpt=original_ckpt, dampening_lambda=0.0)
    assert ssd.hparams["dampening_lambda"] == 0.0
    # lambda = 0 dampens every selected element to zero and leaves the others
    layer = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[3.0, 4.0]]))
    forget, full = {"weight": torch.tensor([[5.0, 1.0]])}, {"weight": torch.tensor([[1.0, 1.0]])}
    assert dampen_parameters(layer, forget, full, selection_alpha=2.0, dampening_lambda=0.0) == {"weight": 1}
    assert layer.weight.tolist() == [[0.0, 4.0]]


# ---------------------------------------------------------------------------- teachers
def test_frozen_copy_is_independent_frozen_and_in_eval_mode():
    net = SmallCNN()
    teacher = frozen_copy(net)
    assert not teacher.training and not any(m.training for m in teacher.modules())
    assert not any(p.requires_grad for p in teacher.parameters())
    assert all(p.requires_grad for p in net.parameters()) and net.training
    with torch.no_grad():
        next(net.parameters()).add_(1.0)
    assert not torch.equal(next(net.parameters()), next(teacher.parameters()))


def test_randomly_initialised_copy_is_seeded_and_leaves_global_rng_alone():
    net = SmallCNN()
    state = torch.get_rng_state()
    a, b, c = (randomly_initialised_copy(net, seed) for seed in (3, 3, 4))
    assert torch.equal(torch.get_rng_state(), state)
    pairs = list(
        zip(a.state_dict().values(), b.state_dict().values(), c.state_dict().values(), net.state_dict().values())
    )
    assert all(torch.equal(x, y) for x, y, _, _ in pairs)
    assert not torch.equal(a.fc.weight, c.fc.weight) and not torch.equal(a.fc.weight, net.fc.weight)
    assert not a.training and not any(p.requires_grad for p in a.parameters())
    with pytest.raises(ValueError, match="reset_parameters"):
        randomly_initialised_copy(nn.ReLU(), 0)


def test_teachers_follow_the_student_device_and_dtype():
    teachers = FrozenTeachers()
    teachers.add("t", nn.Linear(3, 2))
    student = nn.Linear(3, 2).double()
    move_teachers(teachers, student)
    assert teachers["t"].weight.dtype == torch.float64 and not teachers["t"].training
    with pytest.raises(ValueError, match="already exists"):
        teachers.add("t", nn.Linear(3, 2))


def test_batches_without_forget_flags_are_rejected():
    with pytest.raises(ValueError, match=r"BadTeacherModule trains on batches with \['is_forget'\].*'both' stream"):
        batch_fields((torch.zeros(2, 1, 8, 8), torch.zeros(2)), "image", "is_forget", user="BadTeacherModule")


class TeacherAudit(Callback):
    """Watches the teachers during training: mode and grad mode at every forward, grads, optimizer."""

    def __init__(self):
        self.calls = []  # (teacher name, training, grad enabled)
        self.checked_batches = 0

    def on_fit_start(self, trainer, pl_module):
        self.before = {
            name: {k: v.clone() for k, v in pl_module.teachers[name].state_dict().items()}
            for name in pl_module.teachers.names()
        }
        for name in pl_module.teachers.names():

            def hook(module, args, name=name):
                self.calls.append(
                    (name, module.training or any(m.training for m in module.modules()), torch.is_grad_enabled())
                )

            pl_module.teachers[name].register_forward_pre_hook(hook)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        assert pl_module.training and pl_module.backbone.training
        teacher_params = {id(p) for net in pl_module.teachers for p in net.parameters()}
        optimised = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
        assert optimised and not optimised & teacher_params
        for net in pl_module.teachers:
            assert not net.training
            for p in net.parameters():
                assert not p.requires_grad and p.grad is None
        self.checked_batches += 1

    def on_fit_end(self, trainer, pl_module):
        self.after = {name: pl_module.teachers[name].state_dict() for name in pl_module.teachers.names()}


@pytest.mark.parametrize("cls,names", [(BadTeacherModule, {"competent", "incompetent"}), (SCRUBModule, {"original"})])
def test_teachers_are_frozen_in_eval_mode_and_outside_state_and_optimizer(original_ckpt, tmp_path, cls, names):
    module = cls(SmallCNN(), original_ckpt=original_ckpt, recipe={"lr": 1e-2})
    assert set(module.teachers.names()) == names
    # Not children: not in the state dict, parameters() or the module tree.
    assert set(module.state_dict()) == {f"backbone.{k}" for k in module.backbone.state_dict()}
    assert sum(p.numel() for p in module.parameters()) == sum(p.numel() for p in module.backbone.parameters())
    module.train()
    assert all(not net.training for net in module.teachers)

    audit = TeacherAudit()
    quick_trainer(tmp_path, limit_train_batches=3, callbacks=[audit]).fit(module, datamodule=datamodule())
    assert audit.checked_batches == 3
    assert {name for name, _, _ in audit.calls} == names
    assert all(not training and not grad for _, training, grad in audit.calls)
    for name in names:  # teachers unchanged, student moved
        assert all(torch.equal(audit.before[name][k], v) for k, v in audit.after[name].items())
    original = read_state_dict(original_ckpt)
    if cls is BadTeacherModule:
        assert all(torch.equal(original[k], v) for k, v in audit.after["competent"].items())
    else:
        assert all(torch.equal(original[k], v) for k, v in audit.after["original"].items())
    assert not torch.equal(module.backbone.fc.weight, original["fc.weight"])


# ---------------------------------------------------------------------------- Bad Teacher
def test_bad_teacher_loss_matches_hand_computation():
    torch.manual_seed(0)
    student, competent, incompetent = torch.randn(3, 4, 5).unbind(0)
    is_forget = torch.tensor([True, False, False, True])
    temperature = 2.5
    teacher = torch.where(is_forget[:, None], incompetent, competent)
    p = torch.softmax(teacher / temperature, 1)
    q = torch.softmax(student / temperature, 1)
    expected = (p * (p.log() - q.log())).sum() / 4
    loss = bad_teacher_loss(student, competent, incompetent, is_forget, temperature)
    assert torch.allclose(loss, expected, atol=1e-6)
    mean = bad_teacher_loss(student, competent, incompetent, is_forget, temperature, reduction="mean")
    assert torch.allclose(mean, expected / 5, atol=1e-7)
    # A student equal to the competent teacher pays only for the forgetting rows.
    only_forget = bad_teacher_loss(competent, competent, incompetent, is_forget, temperature)
    p_f = torch.softmax(incompetent[is_forget] / temperature, 1)
    q_f = torch.softmax(competent[is_forget] / temperature, 1)
    assert torch.allclose(only_forget, (p_f * (p_f.log() - q_f.log())).sum() / 4, atol=1e-6)


def test_bad_teacher_incompetent_teacher_is_seeded_and_competent_is_original(original_ckpt):
    a = BadTeacherModule(SmallCNN(), original_ckpt=original_ckpt, incompetent_seed=5)
    b = BadTeacherModule(SmallCNN(), original_ckpt=original_ckpt, incompetent_seed=5)
    c = BadTeacherModule(SmallCNN(), original_ckpt=original_ckpt, incompetent_seed=6)
    assert torch.equal(a.teachers["incompetent"].fc.weight, b.teachers["incompetent"].fc.weight)
    assert not torch.equal(a.teachers["incompetent"].fc.weight, c.teachers["incompetent"].fc.weight)
    assert torch.equal(a.teachers["competent"].fc.weight, a.backbone.fc.weight)
    assert not torch.equal(a.teachers["incompetent"].fc.weight, a.backbone.fc.weight)
    assert a.stream == "both"


# ---------------------------------------------------------------------------- SCRUB
def test_distill_kl_is_repdistiller_kd():
    torch.manual_seed(1)
    s, t = torch.randn(2, 6, 3).unbind(0)
    temperature = 4.0
    expected = (
        F.kl_div(F.log_softmax(s / temperature, 1), F.softmax(t / temperature, 1), reduction="sum") * temperature**2 / 6
    )
    assert torch.allclose(distill_kl(s, t, temperature), expected, atol=1e-6)


class PhaseRecord(Callback):
    """Per rank: the phase of every batch, the step counts and a weight checksum."""

    def __init__(self, folder=None):
        self.folder, self.phases = folder, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.phases.append((trainer.current_epoch, batch["phase"], int(batch["target"].numel())))

    def on_train_end(self, trainer, pl_module):
        if self.folder is None:
            return
        checksum = float(sum(p.double().sum() for p in pl_module.backbone.parameters()))
        record = {
            "phases": self.phases,
            "counts": pl_module.step_counts[0],
            "global_step": trainer.global_step,
            "checksum": checksum,
        }
        (Path(self.folder) / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


def scrub_as_the_authors(original_ckpt, dm, epochs, msteps, batch_size, forget_batch_size, lr, seed=0):
    """SCRUB's loop re-stated from large_scale_unlearning.ipynb and repdistiller's train_distill:
    for epoch in 1..sgda_epochs: if epoch <= msteps: max pass over forget_loader; min pass over
    retain_loader; one SGD optimizer; student in train mode, teacher in eval mode. The batch
    order is the datamodule's documented one (per epoch, a seeded permutation of the remaining
    set, then one of the forget set)."""
    student, teacher = SmallCNN(), SmallCNN()
    state = read_state_dict(original_ckpt, "original_ckpt")
    student.load_state_dict(state)
    teacher.load_state_dict(state)
    teacher.eval()
    optimizer = torch.optim.SGD(student.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    targets = dm.train_targets
    images = dm._loaded().train.images
    remain, forget = dm.remain_indices, dm.forget_indices
    steps = {"max": 0, "min": 0}
    for epoch in range(1, epochs + 1):
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch - 1)
        retain_order = remain[torch.randperm(remain.numel(), generator=generator)]
        forget_order = forget[torch.randperm(forget.numel(), generator=generator)]
        passes = [("minimize", retain_order.split(batch_size))]
        if epoch <= msteps:
            passes.insert(0, ("maximize", forget_order.split(forget_batch_size)))
        for mode, loader in passes:
            student.train()
            for index in loader:
                x, y = to_unit_float(images[index]), targets[index]
                logit_s = student(x)
                with torch.no_grad():
                    logit_t = teacher(x)
                loss_div = distill_kl(logit_s, logit_t, 4.0)
                if mode == "maximize":
                    loss = -loss_div
                    steps["max"] += 1
                else:
                    loss = 0.99 * F.cross_entropy(logit_s, y) + 0.001 * loss_div
                    steps["min"] += 1
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    return student, steps


def test_scrub_follows_the_authors_schedule_and_loop(original_ckpt, tmp_path):
    """Per epoch one max pass over the forget set in its own batches (first msteps epochs), then
    one min pass over the remaining set: the step counts and the final weights of the authors'
    loop on digits (3 epochs, msteps 2, batches of 128 remaining and 64 forget)."""
    module = SCRUBModule(
        SmallCNN(),
        original_ckpt=original_ckpt,
        max_phase_epochs=2,
        forget_batch_size=64,
        recipe={"lr": 0.01},
    )
    assert [module.in_max_phase(e) for e in range(3)] == [True, True, False]
    record = PhaseRecord()
    dm = datamodule(batch_size=128)
    trainer = quick_trainer(tmp_path, max_epochs=3, callbacks=[record])
    trainer.fit(module, datamodule=dm)
    num_forget, num_remain = dm.forget_indices.numel(), dm.remain_indices.numel()
    max_steps, min_steps = math.ceil(num_forget / 64), math.ceil(num_remain / 128)
    assert module.step_counts == {
        0: {"max": max_steps, "min": min_steps},
        1: {"max": max_steps, "min": min_steps},
        2: {"max": 0, "min": min_steps},
    }
    for epoch in range(3):  # all max steps first, then all min steps
        phases = [phase for e, phase, _ in record.phases if e == epoch]
        assert phases == ["forget"] * (max_steps if epoch < 2 else 0) + ["remain"] * min_steps
    assert trainer.global_step == 2 * max_steps + 3 * min_steps

    reference, steps = scrub_as_the_authors(original_ckpt, dm, 3, 2, 128, 64, lr=0.01)
    assert steps == {"max": 2 * max_steps, "min": 3 * min_steps}
    for (name, ours), theirs in zip(module.backbone.state_dict().items(), reference.state_dict().values()):
        assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-5), name


@pytest.mark.timeout(300)
def test_scrub_phases_stay_aligned_across_two_processes(original_ckpt, tmp_path):
    """Under DDP each phase is split across the ranks on its own: both ranks take their max
    steps first and their min steps after, at the same steps, and end with the same weights."""
    module = SCRUBModule(SmallCNN(), original_ckpt=original_ckpt, max_phase_epochs=1, forget_batch_size=8)
    strategy = DDPStrategy(start_method="spawn", process_group_backend="gloo", timeout=timedelta(seconds=60))
    trainer = quick_trainer(
        tmp_path, devices=2, strategy=strategy, limit_train_batches=12, callbacks=[PhaseRecord(tmp_path)]
    )
    trainer.fit(module, datamodule=datamodule(batch_size=8))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    max_per_rank = math.ceil(math.ceil(130 / 8) / 2)  # 17 forget batches, padded to 18
    for record in ranks:
        assert [phase for _, phase, _ in record["phases"]] == ["forget"] * max_per_rank + ["remain"] * (
            12 - max_per_rank
        )
        assert record["counts"] == {"max": max_per_rank, "min": 12 - max_per_rank}
    assert ranks[0]["checksum"] == ranks[1]["checksum"]


def test_scrub_max_steps_push_the_student_away_from_the_teacher_on_the_forget_set(original_ckpt, tmp_path):
    def forget_kl(max_phase_epochs):
        torch.manual_seed(0)
        # alpha = gamma = 0 and plain SGD: min steps cannot move the weights, only max steps can.
        module = SCRUBModule(
            SmallCNN(),
            original_ckpt=original_ckpt,
            alpha=0.0,
            gamma=0.0,
            recipe={"lr": 0.05, "momentum": 0.0, "weight_decay": 0.0},
            max_phase_epochs=max_phase_epochs,
        )
        dm = datamodule()
        state = module.backbone.state_dict()
        buffers = {name: b.clone() for name, b in module.backbone.named_buffers() if name in state}
        quick_trainer(tmp_path, limit_train_batches=4).fit(module, datamodule=dm)
        # Every forward pass in train mode moves the batch-norm statistics; compare the weights only.
        module.backbone.load_state_dict({**module.backbone.state_dict(), **buffers})
        images, _ = dm.evaluation_splits()["forget"]
        module.eval()
        with torch.no_grad():
            x = to_unit_float(images)
            return float(distill_kl(module(x), module.teachers.logits("original", x), 4.0))

    assert forget_kl(1) > 10 * max(forget_kl(0), 1e-3)


# ---------------------------------------------------------------------------- SSD
def test_dampen_parameters_follows_the_ssd_rule():
    model = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0, 3.0, -4.0]]))
    forget = {"weight": torch.tensor([[0.0, 10.0, 100.0, 50.0]])}
    full = {"weight": torch.tensor([[1.0, 1.0, 1.0, 2.0]])}
    selected = dampen_parameters(model, forget, full, selection_alpha=10.0, dampening_lambda=1.0)
    # selected: 100 > 10 (beta 0.01) and 50 > 20 (beta 2/50); 10 > 10 is not.
    assert selected == {"weight": 2}
    assert torch.allclose(model.weight, torch.tensor([[1.0, 2.0, 0.03, -0.16]]))
    # beta is capped at 1: a huge lambda leaves selected weights as they are.
    dampen_parameters(model, forget, full, selection_alpha=10.0, dampening_lambda=1e6)
    assert torch.allclose(model.weight, torch.tensor([[1.0, 2.0, 0.03, -0.16]]))


def test_diagonal_importance_is_the_mean_squared_batch_gradient():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    model.train()
    images = torch.randint(0, 256, (5, 1, 2, 2), dtype=torch.uint8)
    targets = torch.tensor([0, 1, 2, 1, 0])
    squares = []
    for start in (0, 2, 4):  # batches of 2, 2 and 1 images
        model.zero_grad()
        F.cross_entropy(model(to_unit_float(images[start : start + 2])), targets[start : start + 2]).backward()
        squares.append(model[1].weight.grad.pow(2))
    uniform = diagonal_importance(model, images, targets, batch_size=2)  # the default
    assert torch.allclose(uniform["1.weight"], sum(squares) / 3)  # the SSD authors' estimator
    sized = diagonal_importance(model, images, targets, batch_size=2, weighting="size")
    assert torch.allclose(sized["1.weight"], (2 * squares[0] + 2 * squares[1] + squares[2]) / 5)
    full_batches = diagonal_importance(model, images[:4], targets[:4], batch_size=2, weighting="size")
    assert torch.allclose(full_batches["1.weight"], (squares[0] + squares[1]) / 2)
    per_sample = diagonal_importance(model, images, targets, batch_size=1)
    assert torch.allclose(
        per_sample["1.weight"], diagonal_importance(model, images, targets, 1, weighting="uniform")["1.weight"]
    )
    model.zero_grad(set_to_none=True)
    diagonal_importance(model, images, targets, batch_size=2)
    assert model[1].weight.grad is None and model.training


def test_ssd_changes_only_selected_parameters_and_shrinks_them(original_ckpt, tmp_path):
    module = SSDModule(SmallCNN(), original_ckpt=original_ckpt)
    before = {k: v.clone() for k, v in module.backbone.state_dict().items()}
    dm = datamodule()
    quick_trainer(tmp_path, limit_train_batches=2).fit(module, datamodule=dm)
    assert module.dampened and module.stream == "forget"

    # Recompute the selection independently on the original weights.
    reference = SmallCNN()
    reference.load_state_dict(before)
    splits = dm.evaluation_splits()
    (fx, fy), (rx, ry) = splits["forget"], splits["remain"]
    forget_imp = diagonal_importance(reference, fx, fy, 128)
    full_imp = diagonal_importance(reference, torch.cat([rx, fx]), torch.cat([ry, fy]), 128)
    params = dict(module.backbone.named_parameters())
    total_selected = 0
    for name, value in before.items():
        after = module.backbone.state_dict()[name]
        if name not in params:  # buffers (batch-norm statistics) are untouched
            assert torch.equal(after, value), name
            continue
        mask = forget_imp[name] > 10.0 * full_imp[name]
        total_selected += int(mask.sum())
        assert torch.equal(after[~mask], value[~mask]), name
        assert torch.all(after.abs() <= value.abs()), name
        beta = (full_imp[name][mask] / forget_imp[name][mask]).clamp(max=1.0)
        assert torch.allclose(after[mask], value[mask] * beta), name
    assert total_selected == sum(module.selected.values()) > 0
    assert any(not torch.equal(module.backbone.state_dict()[k], v) for k, v in before.items())


def test_ssd_never_dampens_twice_after_resume(original_ckpt):
    module = SSDModule(SmallCNN(), original_ckpt=original_ckpt)
    checkpoint = {}
    module.dampened = True
    module.on_save_checkpoint(checkpoint)
    resumed = SSDModule(SmallCNN(), original_ckpt=original_ckpt)
    resumed.on_load_checkpoint(checkpoint)
    before = resumed.backbone.fc.weight.clone()
    resumed.on_train_start()  # returns before touching the (absent) trainer
    assert torch.equal(resumed.backbone.fc.weight, before)
