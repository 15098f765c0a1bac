"""A bank of Retrains (``natmu-lightning-bank``) and the evaluator's per-example metrics against it
(``UnlearningEvaluator(reference_bank=...)``, natmu_lightning/metrics/bank.py)."""

from __future__ import annotations

import importlib
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from natmu_lightning import ClassifierModule, SmallCNN, UnlearningEvaluator
from natmu_lightning.bank import read_bank
from natmu_lightning.bank.build import entry_point, member_args
from natmu_lightning.callbacks.record import find_evaluator
from natmu_lightning.cli import main
from natmu_lightning.data import RandomForget
from natmu_lightning.metrics.bank import (
    STD_FLOOR,
    ReferenceBankMetric,
    compare_to_bank,
    logit_confidence,
    predictive_factor,
    student_t_quantile,
)
from natmu_lightning.metrics.evaluation import BankOutputs, EvaluationOutputs
from natmu_lightning.records import file_sha256, indices_sha256
from tests.tiny_runs import (
    NUM_CLASSES,
    digits_args,
    make_dm,
    make_model,
    make_trainer,
    pretrained_small_cnn,
    quiet_trainer,
    read_csv,
    read_json,
    synthetic,
)

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
BANK_KEYS = {f"bank_{s}_{v}" for s in ("forget", "remain", "test") for v in ("outside", "divergence", "shift")}


# --------------------------------------------------------------------------- the math
@pytest.mark.parametrize(("df", "table"), [(3, 3.182446), (7, 2.364624), (15, 2.131450)])
def test_the_t_quantile_matches_the_table(df, table):
    assert student_t_quantile(0.975, df) == pytest.approx(table, abs=5e-7)
    assert student_t_quantile(0.025, df) == pytest.approx(-table, abs=5e-7)


def test_the_t_quantile_matches_closed_forms_and_scipy():
    assert student_t_quantile(0.975, 1) == pytest.approx(math.tan(math.pi * 0.475), rel=1e-9)  # Cauchy
    # two degrees of freedom: t = (2p - 1) sqrt(2 / (1 - (2p - 1)^2))
    a = 2 * 0.9 - 1
    assert student_t_quantile(0.9, 2) == pytest.approx(a * math.sqrt(2 / (1 - a * a)), rel=1e-9)
    assert student_t_quantile(0.5, 5) == 0.0
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 4, 7, 9, 15, 31, 127):
        for q in (0.6, 0.9, 0.975, 0.995):
            assert student_t_quantile(q, df) == pytest.approx(float(stats.t.ppf(q, df)), rel=1e-9, abs=1e-9)


def test_the_score_is_the_clipped_logit_of_the_true_class():
    probs = torch.tensor([[0.8, 0.15, 0.05], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.25, 0.25, 0.5]])
    labels = torch.tensor([0, 0, 0, 2])
    clip = math.log((1 - 1e-6) / 1e-6)  # 13.8155...
    expected = [math.log(0.8 / 0.2), clip, -clip, 0.0]
    assert logit_confidence(probs, labels).tolist() == pytest.approx(expected, abs=1e-6)
    assert logit_confidence(probs, labels).dtype == torch.float64


def test_the_comparison_on_hand_made_scores():
    # K = 4 members, 3 samples:
    #   A: 0, 1, 2, 3   -> mean 1.5, sample std sqrt(5/3); the model's 7 is outside
    #   B: 1, 1, 1, 1   -> std 0 (floored): the model's 1 is at the mean, inside
    #   C: -1, 1, -1, 1 -> mean 0, std sqrt(4/3); the model's -2 is inside
    members = torch.tensor([[0.0, 1.0, -1.0], [1.0, 1.0, 1.0], [2.0, 1.0, -1.0], [3.0, 1.0, 1.0]])
    model = torch.tensor([7.0, 1.0, -2.0])
    half_width = 3.182446 * math.sqrt(1 + 1 / 4)  # t_{0.975, 3} sqrt(1 + 1/K), in units of std
    z = [5.5 / math.sqrt(5 / 3), 0.0, -2.0 / math.sqrt(4 / 3)]
    assert abs(z[0]) > half_width and abs(z[2]) < half_width
    found = compare_to_bank(model, members)
    assert found.mean.tolist() == pytest.approx([1.5, 1.0, 0.0])
    assert found.std.tolist() == pytest.approx([math.sqrt(5 / 3), 0.0, math.sqrt(4 / 3)])
    assert found.z.tolist() == pytest.approx(z)
    assert found.outside == pytest.approx(100 / 3)
    assert found.divergence == pytest.approx(sum(map(abs, z)) / 3)
    assert found.shift == pytest.approx(sum(z) / 3)
    assert predictive_factor(4) == pytest.approx(half_width, rel=1e-6)
    # on a member-identical sample, any other score is far outside (sigma floored, not zero)
    assert compare_to_bank(torch.tensor([1.01]), members[:, 1:2]).z.tolist() == pytest.approx([0.01 / STD_FLOOR])


def test_the_metric_reads_the_bank_outputs_of_each_split():
    def probs_of(scores):  # two classes, label 0: the score is the logit of p
        p = torch.sigmoid(torch.tensor(scores, dtype=torch.float64))
        return torch.stack([p, 1 - p], 1)

    members = torch.tensor([[0.0, 1.0, -1.0], [1.0, 1.0, 1.0], [2.0, 1.0, -1.0], [3.0, 1.0, 1.0]])
    z_forget = [5.5 / math.sqrt(5 / 3), 0.0, -2.0 / math.sqrt(4 / 3)]
    labels = torch.zeros(3, dtype=torch.long)
    bank = BankOutputs(
        probs={"forget": probs_of([7.0, 1.0, -2.0]), "remain": probs_of([1.5, 1.0, 0.0]), "test": probs_of([1.5] * 3)},
        labels={"forget": labels, "remain": labels, "test": labels},
        member_scores={"forget": members, "remain": members, "test": members},
    )
    metric = ReferenceBankMetric()
    assert metric.compute(EvaluationOutputs({}, {}), {}) == {}  # nothing without a bank
    values = metric.compute(EvaluationOutputs({}, {}, bank=bank), {})
    assert set(values) == set(metric.keys) == BANK_KEYS
    assert values["bank_forget_outside"] == pytest.approx(100 / 3)
    assert values["bank_forget_divergence"] == pytest.approx(sum(map(abs, z_forget)) / 3)
    assert values["bank_forget_shift"] == pytest.approx(sum(z_forget) / 3)
    assert values["bank_remain_outside"] == 0.0  # each at its mean
    assert values["bank_remain_divergence"] == pytest.approx(0.0, abs=1e-9)
    assert values["bank_test_outside"] == pytest.approx(100 / 3)  # 1.5 on B, where every member gives 1
    assert values["bank_test_shift"] == pytest.approx((0.0 + 0.5 / STD_FLOOR + 1.5 / math.sqrt(4 / 3)) / 3)


# --------------------------------------------------------------------------- the evaluator, tiny hand-made banks
def write_bank(folder: Path, checkpoints: list[Path], forget_indices, backbone=None, seeds=None) -> Path:
    """A bank.json in the format natmu-lightning-bank writes, over existing checkpoint files."""
    backbone = backbone or SmallCNN(num_classes=NUM_CLASSES, width=4)
    from natmu_lightning.bank.file import architecture_sha256, class_path

    seeds = seeds or list(range(1000, 1000 + len(checkpoints)))
    payload = {
        "format": 1,
        "forget": {"count": len(forget_indices), "indices_sha256": indices_sha256(forget_indices)},
        "backbone": class_path(backbone),
        "architecture_sha256": architecture_sha256(backbone),
        "num_classes": NUM_CLASSES,
        "members": [
            {"seed": seed, "checkpoint": os.path.relpath(path, folder), "sha256": file_sha256(path)}
            for seed, path in zip(seeds, checkpoints)
        ],
    }
    path = folder / "bank.json"
    path.write_text(json.dumps(payload))
    return path


@pytest.fixture
def tiny_bank(tmp_path):
    """Three briefly trained width-4 SmallCNNs on the tiny synthetic source, as a bank of the
    tiny datamodule's forget request; returns (bank.json, the forget indices)."""
    dm = make_dm()
    dm.setup("validate")
    members = [
        Path(pretrained_small_cnn(synthetic(), NUM_CLASSES, tmp_path / f"member{s}.pt", seed=s, steps=20))
        for s in (11, 12, 13)
    ]
    return write_bank(tmp_path, members, dm.forget_indices.tolist()), dm.forget_indices


def test_the_evaluator_reports_logs_and_saves_the_bank_metrics(tmp_path, tiny_bank):
    bank, forget = tiny_bank
    reference = pretrained_small_cnn(synthetic(), NUM_CLASSES, tmp_path / "reference.pt", seed=21, steps=20)
    evaluated = pretrained_small_cnn(synthetic(), NUM_CLASSES, tmp_path / "evaluated.pt", seed=22, steps=20)
    model = ClassifierModule(SmallCNN(num_classes=NUM_CLASSES, width=4), stream="remain", original_ckpt=evaluated)
    evaluator = UnlearningEvaluator(reference_bank=str(bank), reference_ckpt=reference, save_outputs=True, attacks=())
    trainer = make_trainer(tmp_path, [evaluator])
    trainer.validate(model, datamodule=make_dm())
    record = read_json(trainer)
    assert BANK_KEYS <= set(record) and BANK_KEYS <= set(record["reference"])
    assert record["reference_bank"] == str(bank.resolve()) and record["reference_bank_members"] == 3
    # the model and the reference are other networks: each has its own numbers (checked below)
    assert {k: record[k] for k in BANK_KEYS} != {k: record["reference"][k] for k in BANK_KEYS}
    logged = read_csv(trainer)[-1]
    assert float(logged["bank/forget_outside"]) == pytest.approx(record["bank_forget_outside"])
    assert {f"bank/{k[5:]}" for k in BANK_KEYS} <= set(logged)

    # the saved per-sample values are the metric's, recomputed here from the members' files
    saved = np.load(Path(trainer.log_dir) / "evaluation_outputs.npz")
    images, labels = make_dm().evaluation_splits()["forget"]

    def scores(path):
        net = SmallCNN(num_classes=NUM_CLASSES, width=4)
        net.load_state_dict(torch.load(path))
        from natmu_lightning.predict import predict_logits

        return logit_confidence(predict_logits(net, images).softmax(1), labels)

    members = torch.stack([scores(m.checkpoint) for m in read_bank(bank).members])
    own = scores(evaluated)
    # (batches of another size here: equal up to float32 rounding)
    assert saved["bank_forget_score"] == pytest.approx(own.numpy(), abs=1e-5)
    assert saved["bank_forget_mean"] == pytest.approx(members.mean(0).numpy(), abs=1e-5)
    assert saved["bank_forget_std"] == pytest.approx(members.std(0).numpy(), abs=1e-5)

    def z_scores(net_scores):
        return (net_scores - members.mean(0)) / members.std(0).clamp_min(STD_FLOOR)

    assert saved["bank_forget_z"] == pytest.approx(z_scores(own).numpy(), abs=1e-4)
    assert saved["bank_forget_score"].shape == (forget.numel(),)
    for values, net_scores in ((record, own), (record["reference"], scores(reference))):
        outside = 100 * float((z_scores(net_scores).abs() > predictive_factor(3)).double().mean())
        assert values["bank_forget_outside"] == pytest.approx(outside)
        assert values["bank_forget_shift"] == pytest.approx(float(z_scores(net_scores).mean()), abs=1e-4)


def test_the_members_are_scored_once_per_evaluator(tmp_path, tiny_bank, monkeypatch):
    import natmu_lightning.checkpoints as checkpoints_module

    bank, _ = tiny_bank
    loads = []
    original = checkpoints_module.load_weights
    monkeypatch.setattr(
        checkpoints_module,
        "load_weights",
        lambda model, path, *a, **kw: (loads.append(path), original(model, path, *a, **kw)),
    )
    evaluator = UnlearningEvaluator(reference_bank=str(bank), attacks=())
    trainer = quiet_trainer(tmp_path, max_epochs=3, callbacks=[evaluator])
    trainer.fit(make_model(), datamodule=make_dm())
    # three members: loaded once each to check them at setup, once each to score them
    assert len(loads) == 6
    assert evaluator.last_metrics is not None and BANK_KEYS <= set(evaluator.last_metrics)


def test_without_a_bank_nothing_changes(tmp_path):
    evaluator = UnlearningEvaluator(attacks=())
    assert not any(isinstance(metric, ReferenceBankMetric) for metric in evaluator.metrics)
    trainer = make_trainer(tmp_path, [evaluator])
    trainer.validate(make_model(), datamodule=make_dm())
    record = read_json(trainer)
    assert not any(key.startswith(("bank", "reference_bank")) for key in record)


# --------------------------------------------------------------------------- bad input, before any work
def fit_refused(tmp_path, bank, match):
    """Fitting with the bank raises ``match`` before any training step or evaluation."""
    evaluator = UnlearningEvaluator(reference_bank=str(bank), attacks=())
    trainer = make_trainer(tmp_path, [evaluator])
    with pytest.raises(ValueError, match=match):
        trainer.fit(make_model(), datamodule=make_dm())
    assert trainer.global_step == 0 and evaluator.last_metrics is None
    assert not (tmp_path / "logs" / "version_0" / "unlearning_metrics.json").exists()


def test_a_bank_for_another_forget_request_is_refused(tmp_path, tiny_bank):
    bank, _ = tiny_bank
    other = make_dm(forget=RandomForget(0.3))
    other.setup("validate")
    payload = json.loads(bank.read_text())
    payload["forget"] = {"count": other.forget_indices.numel(), "indices_sha256": indices_sha256(other.forget_indices)}
    bank.write_text(json.dumps(payload))
    fit_refused(tmp_path, bank, "another forget request")


def test_a_changed_member_file_is_refused(tmp_path, tiny_bank):
    bank, _ = tiny_bank
    member = read_bank(bank).members[1]
    torch.save(SmallCNN(num_classes=NUM_CLASSES, width=4).state_dict(), member.checkpoint)  # same shapes, new bytes
    fit_refused(tmp_path, bank, "seed 1001.*changed since bank.json was written")
    member.checkpoint.unlink()
    fit_refused(tmp_path, bank, "seed 1001.*does not exist")


def test_a_member_of_another_architecture_is_refused(tmp_path, tiny_bank):
    bank, _ = tiny_bank
    wider = tmp_path / "wider.pt"
    torch.save(SmallCNN(num_classes=NUM_CLASSES, width=8).state_dict(), wider)
    payload = json.loads(bank.read_text())
    payload["members"][2] = {"seed": 1002, "checkpoint": "wider.pt", "sha256": file_sha256(wider)}
    bank.write_text(json.dumps(payload))
    fit_refused(tmp_path, bank, "member seed 1002.*does not fit the SmallCNN backbone")


def test_a_bank_of_fewer_than_two_members_is_refused(tiny_bank):
    bank, _ = tiny_bank
    payload = json.loads(bank.read_text())
    payload["members"] = payload["members"][:1]
    bank.write_text(json.dumps(payload))
    with pytest.raises(ValueError, match="1 member.*at least 2"):
        UnlearningEvaluator(reference_bank=str(bank))
    with pytest.raises(ValueError, match="does not exist"):
        UnlearningEvaluator(reference_bank=str(bank.parent / "missing.json"))


def refuse_training(*args, **kwargs):
    raise ValueError("a member started training")


def test_the_command_refuses_before_training(tmp_path, capsys, monkeypatch):
    out = tmp_path / "bank"
    with pytest.raises(SystemExit) as exit_info:
        entry_point([*digits_args("retrain"), "--members", "1", "--out", str(out)])
    assert exit_info.value.code == 2 and "--members must be >= 2" in capsys.readouterr().err
    # an --out holding the bank of another forget request (the configs' data.seed draws another set)
    out.mkdir()
    (out / "bank.json").write_text(json.dumps({"forget": {"indices_sha256": "0" * 64}, "members": []}))
    with pytest.raises(SystemExit) as exit_info:
        entry_point([*digits_args("retrain"), "--members", "2", "--out", str(out)])
    assert exit_info.value.code == 2 and "another forget request" in capsys.readouterr().err
    assert not (out / "members").exists()
    # configs that do not train a Retrain (the original trains on the forget set too)
    with pytest.raises(SystemExit) as exit_info:
        entry_point([*digits_args("original"), "--members", "2", "--out", str(tmp_path / "not_retrains")])
    assert exit_info.value.code == 2 and "a bank holds Retrains" in capsys.readouterr().err
    assert not (tmp_path / "not_retrains" / "members").exists()
    # a run's log folder (another request's forget_indices.npy, no bank.json): its file is never rewritten
    run_folder = tmp_path / "a_run"
    run_folder.mkdir()
    np.save(run_folder / "forget_indices.npy", np.arange(5))
    before = (run_folder / "forget_indices.npy").read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        entry_point([*digits_args("retrain"), "--members", "2", "--out", str(run_folder)])
    assert exit_info.value.code == 2 and "holds another forget set" in capsys.readouterr().err
    assert (run_folder / "forget_indices.npy").read_bytes() == before
    assert sorted(p.name for p in run_folder.iterdir()) == ["forget_indices.npy"]
    # a bank whose first member failed (members/ but no bank.json) is started again for the new request
    (run_folder / "members").mkdir()
    # the module (natmu_lightning.bank's `build` is its function of that name)
    monkeypatch.setattr(importlib.import_module("natmu_lightning.bank.build"), "member_args", refuse_training)
    with pytest.raises(SystemExit) as exit_info:
        entry_point([*digits_args("retrain"), "--members", "2", "--out", str(run_folder)])
    assert "a member started training" in capsys.readouterr().err
    assert (run_folder / "forget_indices.npy").read_bytes() != before


def test_a_bank_of_the_same_config_names_with_other_settings_is_refused(tmp_path, capsys):
    """An edited recipe under the same file names would mix members of two recipes."""
    from natmu_lightning.bank.build import config_sha256, describe_request

    config_args = digits_args("retrain")
    found = describe_request(config_args)
    found.pop("forget_indices"), found.pop("world_size")
    out = tmp_path / "bank"
    out.mkdir()
    bank = {**found, "config": list(config_args), "config_sha256": "0" * 64, "members": []}
    (out / "bank.json").write_text(json.dumps(bank))
    with pytest.raises(SystemExit) as exit_info:
        entry_point([*config_args, "--members", "2", "--out", str(out)])
    assert exit_info.value.code == 2 and "another content of the --config files" in capsys.readouterr().err
    # a digest of the settings: a comment changes nothing, another learning rate does
    retrain = Path(config_args[-1])
    commented, changed = tmp_path / "commented.yaml", tmp_path / "changed.yaml"
    commented.write_text("# a note\n" + retrain.read_text())
    changed.write_text(retrain.read_text().replace("lr: 0.05", "lr: 0.04"))
    assert "lr: 0.04" in changed.read_text()
    assert config_sha256([*config_args[:-1], str(commented)]) == config_sha256(config_args)
    assert config_sha256([*config_args[:-1], str(changed)]) != config_sha256(config_args)
    assert not (out / "members").exists()


# --------------------------------------------------------------------------- digits banks: the command, calibration
TINY_DIGITS = """\
# tiny digits Retrains for tests/test_bank.py: 20 epochs of a width-8 SmallCNN
trainer:
  max_epochs: 20
model:
  init_args:
    backbone:
      init_args:
        width: 8
evaluator:
  every_n_epochs: 1000
  attacks: []
"""


@pytest.fixture(scope="module")
def digits_bank(tmp_path_factory):
    """``natmu-lightning-bank`` on tiny digits Retrains: 2 members, then a rerun asking for 4
    (which trains the 2 missing ones), then a rerun asking for 4 again (which trains none);
    then a fifth Retrain (seed 1004, drawn like a member) and the original (the digits
    original.yaml, seed 0), with the same tiny settings. Returns their paths and the bank.json
    read after each run."""
    root = tmp_path_factory.mktemp("digits_bank")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        (root / "tiny.yaml").write_text(TINY_DIGITS)
        configs = [*digits_args("retrain"), "--config", str(root / "tiny.yaml")]
        out = root / "bank"
        banks = []
        for members in (2, 4, 4):
            entry_point([*configs, "--members", str(members), "--out", str(out)])
            banks.append(json.loads((out / "bank.json").read_text()))
            if members == 2:
                first = {seed: os.stat(out / f"members/seed{seed}.ckpt").st_mtime_ns for seed in (1000, 1001)}
        fifth_folder = root / "fifth"
        fifth_folder.mkdir()
        shutil.copy(out / "forget_indices.npy", fifth_folder / "forget_indices.npy")
        cli = main(member_args(configs, 1004, fifth_folder))
        cli.trainer.save_checkpoint(root / "fifth.ckpt", weights_only=True)
        original = [*digits_args("original"), "--config", str(root / "tiny.yaml"), "--evaluator.reference_ckpt", "null"]
        cli = main(
            [
                "fit",
                *original,
                "--trainer.logger.init_args.save_dir",
                str(root / "original"),
                "--trainer.callbacks=[]",
                "--trainer.enable_checkpointing=false",
                *QUIET,
            ]
        )
        cli.trainer.save_checkpoint(root / "original.ckpt", weights_only=True)
    finally:
        os.chdir(cwd)
    return {"root": root, "out": out, "banks": banks, "first_mtimes": first, "configs": configs}


@pytest.mark.slow  # with the digits bank fixture: about 20 s (6 tiny digits fits)
def test_the_command_writes_a_resumable_bank(digits_bank):
    out, banks = digits_bank["out"], digits_bank["banks"]
    assert [[m["seed"] for m in bank["members"]] for bank in banks] == [[1000, 1001], [1000, 1001, 1002, 1003]] + [
        [1000, 1001, 1002, 1003]
    ]
    assert banks[1] == banks[2]
    bank = banks[2]
    for member in bank["members"]:
        assert member["checkpoint"] == f"members/seed{member['seed']}.ckpt"
        assert file_sha256(out / member["checkpoint"]) == member["sha256"]
    # the reruns skipped the finished members: same files, one log version each
    for seed, mtime in digits_bank["first_mtimes"].items():
        assert os.stat(out / f"members/seed{seed}.ckpt").st_mtime_ns == mtime
    for seed in (1000, 1001, 1002, 1003):
        assert [p.name for p in (out / "members" / f"seed{seed}").glob("version_*")] == ["version_0"]
    # the forget request is the configs' (data.seed 0), each member trained on it by index
    resolved = main([*digits_args("retrain"), "--evaluator.reference_ckpt", "null"], run=False).datamodule
    resolved.setup("validate")
    assert bank["forget"]["indices_sha256"] == indices_sha256(resolved.forget_indices)
    assert bank["forget"]["count"] == 130 and bank["forget"]["request"] == "RandomForget(ratio=0.1)"
    assert np.array_equal(np.load(out / "forget_indices.npy"), resolved.forget_indices.numpy())
    member_config = out / "members" / "seed1002" / "version_0" / "forget_indices.npy"
    assert np.array_equal(np.load(member_config), resolved.forget_indices.numpy())
    assert bank["backbone"] == "natmu_lightning.backbones.small_cnn.SmallCNN" and bank["num_classes"] == 10
    assert bank["command"][0] == "natmu-lightning-bank" and bank["config"] == digits_bank["configs"]
    # the evaluator's option on the command line
    cli = main([*digits_args("retrain"), "--evaluator.reference_bank", str(out / "bank.json")], run=False)
    evaluator = find_evaluator(cli.trainer)
    assert evaluator is not None and evaluator.bank_scores is not None
    assert len(evaluator.bank_scores.bank.members) == 4
    # members differ in their weights
    weights = [torch.load(out / m["checkpoint"], weights_only=True)["state_dict"] for m in bank["members"][:2]]
    assert not torch.equal(weights[0]["backbone.fc.weight"], weights[1]["backbone.fc.weight"])


@pytest.mark.slow  # with the digits bank fixture: about 20 s (6 tiny digits fits)
def test_a_fifth_retrain_falls_inside_the_bank_and_the_original_shifts_beyond_it(digits_bank):
    """The calibration must-show: against a bank of 4 tiny digits Retrains, a fifth Retrain
    (seed 1004) has at most 15% of its forget samples outside the 95% predictive intervals
    (about 5 expected), and the original's forget set shifts beyond the test control's more
    than the fifth Retrain's does.

    Measured (CPU, these settings): the fifth 6.9% outside (divergence 1.18), the original
    12.3% (1.53). The ordering of ``bank_forget_outside`` is NOT robust for tiny digits
    models (originals of seeds 1 and 2 give 3.1% and 4.6%, Retrains 2.3-6.9%; docs/bank.md),
    so it is not asserted. What separates every original measured from every Retrain is the
    signed shift on the forget set beyond the controls'.
    """
    root, out = digits_bank["root"], digits_bank["out"]
    datamodule = main([*digits_bank["configs"], "--evaluator.reference_ckpt", "null"], run=False).datamodule
    evaluator = UnlearningEvaluator(reference_bank=str(out / "bank.json"), attacks=())
    module = ClassifierModule(
        SmallCNN(num_classes=10, width=8), stream="remain", original_ckpt=str(root / "fifth.ckpt")
    )
    trainer = quiet_trainer(root / "evaluation", callbacks=[evaluator], limit_val_batches=None)
    trainer.validate(module, datamodule=datamodule, verbose=False)
    fifth = dict(evaluator.last_metrics)
    original = evaluator.measure_checkpoint(trainer, module, str(root / "original.ckpt"))
    print({k: (round(fifth[k], 3), round(original[k], 3)) for k in sorted(BANK_KEYS)})
    assert fifth["bank_forget_outside"] <= 15
    assert original["forget_acc"] > fifth["forget_acc"]  # the original remembers its training samples
    for values in (fifth, original):  # the controls: neither model saw them (test) or both did (remain)
        assert values["bank_test_outside"] <= 15 and values["bank_remain_outside"] <= 15
    # the forget set's shift beyond the test control's: what remembering looks like here
    assert (
        original["bank_forget_shift"] - original["bank_test_shift"]
        > fifth["bank_forget_shift"] - fifth["bank_test_shift"]
    )


# --------------------------------------------------------------------------- DDP
@pytest.mark.slow  # ~30 s: a two-process validate (spawn)
@pytest.mark.timeout(300)
def test_the_bank_metrics_are_the_same_on_two_processes(tmp_path, tiny_bank, monkeypatch):
    from datetime import timedelta

    import pytorch_lightning as pl
    from pytorch_lightning.loggers import CSVLogger
    from pytorch_lightning.strategies import DDPStrategy

    monkeypatch.delenv("MASTER_PORT", raising=False)  # a port of its own (tests/callbacks/test_evaluator_ddp.py)
    bank, _ = tiny_bank
    weights = pretrained_small_cnn(synthetic(), NUM_CLASSES, tmp_path / "model.pt", seed=5, steps=20)
    records = []
    for devices in (1, 2):
        strategy = (
            DDPStrategy(start_method="spawn", process_group_backend="gloo", timeout=timedelta(seconds=120))
            if devices > 1
            else "auto"
        )
        root = tmp_path / f"ws{devices}"
        trainer = pl.Trainer(
            accelerator="cpu",
            devices=devices,
            strategy=strategy,
            default_root_dir=str(root),
            logger=CSVLogger(str(root), name="logs", version=0),
            # batch 4: the forget set and the slices split unevenly over the two ranks
            callbacks=[UnlearningEvaluator(reference_bank=str(bank), batch_size=4, attacks=())],
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
        )
        dm = make_dm()
        dm.setup("validate")
        model = ClassifierModule(SmallCNN(num_classes=NUM_CLASSES, width=4), original_ckpt=weights)
        trainer.validate(model, datamodule=dm)
        records.append(json.loads((root / "logs" / "version_0" / "unlearning_metrics.json").read_text()))
    assert (records[0]["world_size"], records[1]["world_size"]) == (1, 2)
    assert {k: records[0][k] for k in BANK_KEYS} == {k: records[1][k] for k in BANK_KEYS}
