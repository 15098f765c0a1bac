"""Single-process tests of ``natmu_lightning.callbacks.evaluator``.

References are independent: scikit-learn's ``accuracy_score`` and
``LogisticRegression(class_weight="balanced")`` for the metrics, plain batched
forward passes for the logits, and manual computations on the model's outputs for
what the callback writes through a real ``pl.Trainer``.
"""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score

from natmu_lightning import ForgetRemainDataModule, SmallCNN, UnlearningEvaluator
from natmu_lightning.callbacks import distributed
from natmu_lightning.data import ClassForget, Digits, IndexForget, RandomForget, SyntheticImages
from natmu_lightning.data.transforms import to_unit_float
from natmu_lightning.metrics import functional as MF
from natmu_lightning.metrics.reference_free import REFERENCE_FREE_KEYS
from natmu_lightning.metrics.splits import LOG_KEYS, split_metrics
from tests.tiny_runs import (
    NUM_CLASSES,
    make_dm,
    make_model,
    make_trainer,
    pretrained_small_cnn,
    read_csv,
    read_json,
    synthetic,
)


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
def plain_logits(model: torch.nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The reference: a plain batched forward in eval mode, no sharding, no gathering."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = [model(to_unit_float(images[s : s + batch_size])).float() for s in range(0, images.shape[0], batch_size)]
    model.train(was_training)
    return torch.cat(out)


def sk_entropy(probs: torch.Tensor) -> np.ndarray:
    p = probs.detach().to(torch.float64).numpy()
    safe = np.where(p > 0, p, 1.0)
    return -(p * np.log(safe)).sum(axis=1)


def sk_mia(member: torch.Tensor, nonmember: torch.Tensor, target: torch.Tensor) -> tuple[float, int]:
    """sklearn's balanced logistic regression on entropies.

    Returns (% target predicted member, number of targets within 1e-6 of the decision
    boundary, where sklearn's lbfgs and an exact solver may legitimately disagree).
    """
    x_m, x_n, x_t = sk_entropy(member), sk_entropy(nonmember), sk_entropy(target)
    x = np.concatenate([x_m, x_n]).reshape(-1, 1)
    y = np.concatenate([np.ones(len(x_m)), np.zeros(len(x_n))])
    clf = LogisticRegression(C=2.0, class_weight="balanced", tol=1e-12, max_iter=10000).fit(x, y)
    pred = clf.predict(x_t.reshape(-1, 1))
    borderline = int((np.abs(clf.decision_function(x_t.reshape(-1, 1))) < 1e-6).sum())
    return 100.0 * float(pred.mean()), borderline


def sk_acc(probs: torch.Tensor, labels: torch.Tensor) -> float:
    return 100.0 * accuracy_score(labels.numpy(), probs.argmax(1).numpy())


def reference_metrics(model, dm: ForgetRemainDataModule, batch_size: int = 512) -> dict[str, float]:
    """What the evaluator must report, computed without the evaluator's code."""
    splits = dm.evaluation_splits()
    probs = {k: plain_logits(model, images, batch_size).softmax(1) for k, (images, _) in splits.items()}
    labels = {k: targets for k, (_, targets) in splits.items()}
    out = {
        "forget_acc": sk_acc(probs["forget"], labels["forget"]),
        "remain_acc": sk_acc(probs["remain"], labels["remain"]),
        "test_acc": sk_acc(probs["test"], labels["test"]),
    }
    # non-members: the whole test set, the forgotten classes' test samples included (the authors)
    whole_test = torch.cat([probs["test"], probs["forget_test"]]) if "forget_test" in probs else probs["test"]
    out["mia_entropy"], out["_borderline"] = sk_mia(probs["remain"], whole_test, probs["forget"])
    out["_n_forget"] = probs["forget"].shape[0]
    # the package's attack on the independently computed outputs: the same feature set
    # must give the very same number
    out["_mia_same_features"] = MF.mia_entropy(probs["remain"], whole_test, probs["forget"])
    if "forget_test" in probs:
        out["forget_test_acc"] = sk_acc(probs["forget_test"], labels["forget_test"])
    return out


def assert_matches_reference(record: dict, ref: dict) -> None:
    for key in ("forget_acc", "remain_acc", "test_acc") + (("forget_test_acc",) if "forget_test_acc" in ref else ()):
        assert record[key] == pytest.approx(ref[key], abs=1e-9), key
    # exactly the attack on the right splits (members = remain, non-members = the whole test set, target = forget)
    assert record["mia_entropy"] == ref["_mia_same_features"]
    # and sklearn agrees, up to targets on the decision boundary (none, usually)
    assert abs(record["mia_entropy"] - ref["mia_entropy"]) <= 100.0 * ref["_borderline"] / ref["_n_forget"] + 1e-9


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, str]:
    """Weights files of trained models: ``synthetic`` (4 classes) and ``digits`` (10)."""
    root = tmp_path_factory.mktemp("weights")
    return {
        "synthetic": pretrained_small_cnn(synthetic(), NUM_CLASSES, root / "synthetic.pt"),
        "digits": pretrained_small_cnn(Digits(), 10, root / "digits.pt"),
    }


class StepCounter(pl.Callback):
    def __init__(self) -> None:
        self.steps = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.steps += 1


# --------------------------------------------------------------------------- #
# split_metrics against scikit-learn
# --------------------------------------------------------------------------- #
def _random_probs(generator: torch.Generator, n: int, c: int, sharpness: float, dtype=torch.float32) -> torch.Tensor:
    logits = torch.randn(n, c, generator=generator, dtype=torch.float64) * sharpness
    return logits.softmax(1).to(dtype)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("class_wise", [False, True])
def test_split_metrics_matches_sklearn(seed, class_wise):
    g = torch.Generator().manual_seed(seed)
    c = 5
    # members confident, non-members less so, the forget set in between: a real attack
    probs = {
        "remain": _random_probs(g, 97, c, 4.0),
        "test": _random_probs(g, 61, c, 1.5),
        "forget": _random_probs(g, 23, c, 2.5),
    }
    if class_wise:
        probs["forget_test"] = _random_probs(g, 11, c, 2.0)
    labels = {k: torch.randint(0, c, (v.shape[0],), generator=g) for k, v in probs.items()}
    # make accuracies non-trivial: half of each split's labels agree with the argmax
    for k in labels:
        labels[k][::2] = probs[k].argmax(1)[::2]

    got = split_metrics(probs, labels)

    expected_keys = {"forget_acc", "remain_acc", "retain_acc", "test_acc", "mia_entropy", *REFERENCE_FREE_KEYS} | (
        {"forget_test_acc"} if class_wise else set()
    )
    assert set(got) == expected_keys
    assert got["forget_acc"] == pytest.approx(sk_acc(probs["forget"], labels["forget"]), abs=1e-9)
    assert got["remain_acc"] == pytest.approx(sk_acc(probs["remain"], labels["remain"]), abs=1e-9)
    assert got["retain_acc"] == got["remain_acc"]  # the old name, kept for a release
    assert got["test_acc"] == pytest.approx(sk_acc(probs["test"], labels["test"]), abs=1e-9)
    if class_wise:
        assert got["forget_test_acc"] == pytest.approx(sk_acc(probs["forget_test"], labels["forget_test"]), abs=1e-9)
    whole_test = torch.cat([probs["test"], probs["forget_test"]]) if class_wise else probs["test"]
    mia, borderline = sk_mia(probs["remain"], whole_test, probs["forget"])
    assert borderline == 0, "test data puts a target on the boundary; pick another seed"
    assert got["mia_entropy"] == pytest.approx(mia, abs=1e-9)
    assert 0.0 < got["mia_entropy"] < 100.0  # the attack is not degenerate here
    assert all(isinstance(v, float) for v in got.values())


def test_split_metrics_uses_remain_as_members_and_test_as_non_members():
    confident = torch.tensor([[0.99, 0.01]] * 6)
    unsure = torch.tensor([[0.55, 0.45]] * 6)
    zeros = torch.zeros(6, dtype=torch.long)
    probs = {"remain": confident, "test": unsure, "forget": torch.cat([confident[:3], unsure[:1]])}
    labels = {"remain": zeros, "test": zeros, "forget": zeros[:4]}
    assert split_metrics(probs, labels)["mia_entropy"] == 75.0
    swapped = {"remain": unsure, "test": confident, "forget": probs["forget"]}
    assert split_metrics(swapped, labels)["mia_entropy"] == 25.0


# --------------------------------------------------------------------------- #
# sharded_logits on one process
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("batch_size", [1, 7, 50, 53, 1000])
def test_sharded_logits_single_process_equals_plain_forward(batch_size):
    torch.manual_seed(1)
    model = SmallCNN(num_classes=NUM_CLASSES, width=4)
    model.train()
    with torch.no_grad():  # non-trivial BatchNorm running statistics
        for _ in range(3):
            model(torch.rand(16, 1, 8, 8) * 1.5)
    images = synthetic().load().train.images[:53]
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    got = distributed.sharded_logits(model, images, batch_size, trainer)
    assert got.dtype == torch.float32 and got.device.type == "cpu"
    assert got.shape == (53, NUM_CLASSES)
    assert torch.equal(got, plain_logits(model, images, batch_size))
    assert model.training  # the caller's mode is restored


def test_sharded_logits_empty_split():
    model = SmallCNN(num_classes=NUM_CLASSES, width=4)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    out = distributed.sharded_logits(model, torch.zeros(0, 1, 8, 8, dtype=torch.uint8), 8, trainer)
    assert out.shape == (0, NUM_CLASSES)


def test_invalid_arguments():
    with pytest.raises(ValueError):
        UnlearningEvaluator(every_n_epochs=0)
    with pytest.raises(ValueError):
        UnlearningEvaluator(batch_size=0)


def test_evaluator_and_datamodule_pickle():
    """ddp_spawn pickles the trainer with its callbacks and datamodule."""
    evaluator = UnlearningEvaluator(reference_ckpt="x.ckpt", every_n_epochs=3, batch_size=5, filename="m.json")
    clone = pickle.loads(pickle.dumps(evaluator))
    assert (clone.reference_ckpt, clone.every_n_epochs, clone.batch_size, clone.filename) == ("x.ckpt", 3, 5, "m.json")
    dm = make_dm()
    dm.setup("validate")
    assert torch.equal(pickle.loads(pickle.dumps(dm)).forget_indices, dm.forget_indices)


# --------------------------------------------------------------------------- #
# through a real Trainer
# --------------------------------------------------------------------------- #
def test_fit_writes_metrics_json_and_logs(tmp_path, trained):
    dm = make_dm(source=Digits(), forget=RandomForget(0.1))
    model = make_model(num_classes=10, original_ckpt=trained["digits"])
    evaluator = UnlearningEvaluator(batch_size=100)
    trainer = make_trainer(tmp_path, [evaluator], limit_train_batches=4)
    trainer.fit(model, datamodule=dm)

    record = read_json(trainer)
    assert {"forget_acc", "remain_acc", "test_acc", "mia_entropy", "world_size"} <= set(record)
    assert "forget_test_acc" not in record and "avg_gap" not in record and "reference" not in record
    assert record["world_size"] == 1
    assert record["stage"] == "fit" and record["epoch"] == 0 and record["global_step"] == 4
    assert record == evaluator.last_metrics
    # the numbers are those of the trained model, computed independently
    assert_matches_reference(record, reference_metrics(model, dm))
    n_forget = dm.forget_indices.numel()
    assert round(record["forget_acc"] * n_forget / 100) * 100 / n_forget == pytest.approx(record["forget_acc"])

    rows = [r for r in read_csv(trainer) if r.get("forget/acc")]
    assert len(rows) == 1
    for key, logged in LOG_KEYS.items():
        if key in record:
            assert float(rows[0][logged]) == pytest.approx(record[key], rel=1e-6, abs=1e-6), logged
    assert "forget_test/acc" not in rows[0] or rows[0]["forget_test/acc"] == ""
    assert rows[0]["retain/acc"] == rows[0]["remain/acc"] and record["retain_acc"] == record["remain_acc"]


def test_every_n_epochs_is_honoured(tmp_path, monkeypatch):
    calls = []
    original = UnlearningEvaluator._outputs

    def spy(self, trainer, model, final):
        calls.append(trainer.current_epoch)
        return original(self, trainer, model, final)

    monkeypatch.setattr(UnlearningEvaluator, "_outputs", spy)
    trainer = make_trainer(
        tmp_path, [UnlearningEvaluator(every_n_epochs=2, batch_size=32)], max_epochs=5, limit_train_batches=1
    )
    trainer.fit(make_model(), datamodule=make_dm())
    assert calls == [1, 3, 4]  # epochs 2 and 4, and always the last one (0-based epoch numbers)
    rows = [r for r in read_csv(trainer) if r.get("forget/acc")]
    assert [int(r["epoch"]) for r in rows] == [1, 3, 4]
    assert all(r["remain/acc"] and r["test/acc"] and r["mia/entropy"] for r in rows)


def test_every_n_epochs_with_max_steps_only(tmp_path, monkeypatch):
    """Without max_epochs (Lightning sets it to -1) no epoch is "the last": every_n_epochs
    still holds, and the run's end is evaluated once."""
    calls = []
    original = UnlearningEvaluator._outputs

    def spy(self, trainer, model, final):
        calls.append((trainer.current_epoch, trainer.global_step))
        return original(self, trainer, model, final)

    monkeypatch.setattr(UnlearningEvaluator, "_outputs", spy)
    evaluator = UnlearningEvaluator(every_n_epochs=2, batch_size=32)
    trainer = make_trainer(tmp_path, [evaluator], max_epochs=None, max_steps=7, limit_train_batches=2)
    trainer.fit(make_model(), datamodule=make_dm())
    assert trainer.max_epochs == -1
    assert [step for _, step in calls] == [4, 7]  # end of epoch 2 (step 4), then the end of the run
    assert evaluator.last_metrics["global_step"] == 7
    assert read_json(trainer)["global_step"] == 7


def test_validate_and_test_stages(tmp_path, trained):
    dm = make_dm()
    model = make_model(original_ckpt=trained["synthetic"])
    trainer = make_trainer(tmp_path, [UnlearningEvaluator(batch_size=16)])
    results = trainer.validate(model, datamodule=dm)
    record = read_json(trainer)
    assert record["stage"] == "validate" and record["world_size"] == 1
    assert_matches_reference(record, reference_metrics(model, dm))
    assert results[0]["forget/acc"] == pytest.approx(record["forget_acc"], rel=1e-6)
    assert results[0]["mia/entropy"] == pytest.approx(record["mia_entropy"], rel=1e-6)

    trainer = make_trainer(tmp_path / "t", [UnlearningEvaluator(batch_size=16)])
    results = trainer.test(model, datamodule=dm)
    record_test = read_json(trainer)
    assert record_test["stage"] == "test"
    assert {k: record_test[k] for k in LOG_KEYS if k in record} == {k: record[k] for k in LOG_KEYS if k in record}
    assert results[0]["test/acc"] == pytest.approx(record["test_acc"], rel=1e-6)


def test_reference_checkpoint_against_itself_gives_zero_gap(tmp_path, trained):
    dm = make_dm()
    model = make_model(original_ckpt=trained["synthetic"])
    ckpt_dir = tmp_path / "ckpt"
    trainer = make_trainer(
        tmp_path / "fit",
        [ModelCheckpoint(dirpath=str(ckpt_dir), filename="retrain")],
        enable_checkpointing=True,
        limit_train_batches=3,
    )
    trainer.fit(model, datamodule=dm)
    ckpt = ckpt_dir / "retrain.ckpt"
    assert ckpt.is_file()

    # the same weights, once as the evaluated model and once as the reference
    evaluated = make_model(original_ckpt=str(ckpt))
    evaluator = UnlearningEvaluator(reference_ckpt=str(ckpt), batch_size=16)
    trainer = make_trainer(tmp_path / "val", [evaluator])
    results = trainer.validate(evaluated, datamodule=make_dm())
    record = read_json(trainer)
    assert record["avg_gap"] == 0.0
    assert record["reference_ckpt"] == str(ckpt)
    metric_keys = {k for k in record["reference"]}
    assert metric_keys >= {"forget_acc", "remain_acc", "test_acc", "mia_entropy", "mia_svc_entropy", "mia_loss_cv"}
    own = {k: record[k] for k in metric_keys}
    assert record["reference"] == own
    assert record["kl_to_reference"] == 0.0 and record["js_to_reference"] == 0.0
    assert record["tug_of_war"] == 1.0
    assert_matches_reference(record, reference_metrics(evaluated, dm))
    assert results[0]["gap/avg"] == 0.0

    # a plain state dict of another model as reference: the gap is the mean |difference|
    other = make_model()
    torch.save(other.backbone.state_dict(), tmp_path / "other.pt")
    trainer = make_trainer(
        tmp_path / "val2", [UnlearningEvaluator(reference_ckpt=str(tmp_path / "other.pt"), batch_size=16)]
    )
    trainer.validate(evaluated, datamodule=make_dm())
    record = read_json(trainer)
    ref = reference_metrics(other, dm)
    for key in ("forget_acc", "remain_acc", "test_acc"):
        assert record["reference"][key] == pytest.approx(ref[key], abs=1e-9)
    keys = ("test_acc", "remain_acc", "forget_acc", "mia_entropy")
    assert record["avg_gap"] == pytest.approx(sum(abs(record[k] - record["reference"][k]) for k in keys) / 4, abs=1e-12)


@pytest.mark.parametrize("problem", ["missing", "architecture", "classes", "garbage"])
@pytest.mark.parametrize("stage", ["fit", "validate"])
def test_bad_reference_fails_at_setup(tmp_path, problem, stage):
    path = tmp_path / "reference.pt"
    if problem == "architecture":
        torch.save(SmallCNN(num_classes=NUM_CLASSES, width=8).state_dict(), path)
    elif problem == "classes":
        torch.save(SmallCNN(num_classes=NUM_CLASSES + 1, width=4).state_dict(), path)
    elif problem == "garbage":
        path.write_bytes(b"not a checkpoint")
    counter = StepCounter()
    evaluated = []

    class Spy(UnlearningEvaluator):
        def evaluate(self, trainer, model):  # must never be reached
            evaluated.append(True)
            return super().evaluate(trainer, model)

    trainer = make_trainer(tmp_path, [Spy(reference_ckpt=str(path)), counter], limit_train_batches=2)
    model = make_model()
    with pytest.raises(ValueError, match="reference_ckpt") as info:
        getattr(trainer, stage)(model, datamodule=make_dm())
    assert str(path) in str(info.value)
    assert counter.steps == 0 and trainer.global_step == 0 and not evaluated


def test_class_wise_loss_attack_tells_members_from_test_samples_of_the_same_classes():
    """Full class: the loss attack's non-members are the forgotten class's test samples. A
    Retrain-like model is as unsure on the forgotten class's training and test samples (50,
    nothing to tell apart), while against the other classes' confident test samples the
    attack would score ~100 for telling classes apart, not members."""
    g = torch.Generator().manual_seed(3)
    probs = {
        "remain": _random_probs(g, 120, 4, 6.0),
        "test": _random_probs(g, 80, 4, 6.0),
        "forget": _random_probs(g, 60, 4, 0.3),
        "forget_test": _random_probs(g, 60, 4, 0.3),
    }
    labels = {k: v.argmax(1) for k, v in probs.items()}
    for name in ("forget", "forget_test"):
        labels[name] = torch.full((probs[name].shape[0],), 3)
    got = split_metrics(probs, labels, attacks=("loss_cv",), seed=0)

    def loss(name):
        return -torch.log(probs[name].double().gather(1, labels[name][:, None])).flatten()

    assert got["mia_loss_cv"] == MF.loss_mia_cv(loss("forget"), loss("forget_test"), n_splits=5, seed=0)
    assert got["mia_loss_cv"] < 70
    assert MF.loss_mia_cv(loss("forget"), loss("test"), n_splits=5, seed=0) > 95


def test_subclass_request_reports_the_forgotten_subclass_test_images_apart(tmp_path):
    """Sub-class (CIFAR-20 rocket): test accuracy leaves the forgotten fine class's test images
    out and forget_test_acc reports them (the authors' retainDL_inTestSet / forgetDL_inTestSet)."""
    from natmu_lightning.data import SubclassForget
    from natmu_lightning.data.sources import DataSource, ImageSplit, SourceData

    class FineSynthetic(DataSource):
        def load(self):
            base = SyntheticImages(num_classes=4, train_per_class=12, test_per_class=8, height=8, width=8).load()
            fine = lambda split: split.targets * 2 + torch.arange(split.targets.numel()) % 2  # noqa: E731
            return SourceData(
                ImageSplit(base.train.images, base.train.targets // 2, fine(base.train)),
                ImageSplit(base.test.images, base.test.targets // 2, fine(base.test)),
                ["c0", "c1"],
                ["f0", "f1", "f2", "f3", "f4", "f5", "f6", "f7"],
            )

    dm = ForgetRemainDataModule(source=FineSynthetic(), forget=SubclassForget("f5"), stream="remain")
    dm.setup("fit")
    data = dm._loaded()
    inside = data.test.fine_targets == 5
    splits = dm.evaluation_splits()
    assert torch.equal(splits["forget_test"][1], data.test.targets[inside])
    assert splits["test"][1].numel() == int((~inside).sum()) > 0
    assert torch.equal(splits["forget_test"][0], data.test.images[inside])
    assert torch.equal(dm.forget_indices, torch.nonzero(data.train.fine_targets == 5).flatten())


def test_class_forget_reports_forget_test_accuracy(tmp_path, trained):
    dm = make_dm(forget=ClassForget([1]))
    model = make_model(original_ckpt=trained["synthetic"])
    evaluator = UnlearningEvaluator(batch_size=16)
    trainer = make_trainer(tmp_path, [evaluator], limit_train_batches=3)
    trainer.fit(model, datamodule=dm)
    record = read_json(trainer)
    assert {"forget_acc", "remain_acc", "test_acc", "forget_test_acc", "mia_entropy"} <= set(record)

    # manual computation on the whole test set, split by the forgotten class
    data = dm.source.load()
    test_images, test_targets = data.test.images, data.test.targets
    predictions = plain_logits(model, test_images, 1000).argmax(1)
    inside = test_targets == 1
    assert 0 < int(inside.sum()) < test_targets.numel()
    correct_outside = int((predictions[~inside] == test_targets[~inside]).sum())
    correct_inside = int((predictions[inside] == test_targets[inside]).sum())
    assert record["test_acc"] == pytest.approx(100.0 * correct_outside / int((~inside).sum()), abs=1e-9)
    assert record["forget_test_acc"] == pytest.approx(100.0 * correct_inside / int(inside.sum()), abs=1e-9)
    # the forget split is every training sample of class 1
    train_predictions = plain_logits(model, data.train.images, 1000).argmax(1)
    forget = data.train.targets == 1
    assert torch.equal(dm.forget_indices, torch.nonzero(forget).flatten())
    assert record["forget_acc"] == pytest.approx(
        100.0 * int((train_predictions[forget] == 1).sum()) / int(forget.sum()), abs=1e-9
    )
    assert_matches_reference(record, reference_metrics(model, dm))

    rows = [r for r in read_csv(trainer) if r.get("forget_test/acc")]
    assert len(rows) == 1 and float(rows[0]["forget_test/acc"]) == pytest.approx(record["forget_test_acc"], rel=1e-6)


def test_needs_a_datamodule_with_evaluation_splits(tmp_path):
    from torch.utils.data import DataLoader, TensorDataset

    loader = DataLoader(TensorDataset(torch.rand(8, 1, 8, 8), torch.zeros(8, dtype=torch.long)), batch_size=4)
    trainer = make_trainer(tmp_path, [UnlearningEvaluator()])
    with pytest.raises(ValueError, match="evaluation_splits"):
        trainer.validate(make_model(), dataloaders=loader)


def test_odd_sizes_and_explicit_indices(tmp_path, trained):
    """An explicit, odd-sized forget set with a batch size that divides nothing."""
    dm = make_dm(forget=IndexForget([0, 3, 4, 9, 17, 22, 31]))
    model = make_model(original_ckpt=trained["synthetic"])
    trainer = make_trainer(tmp_path, [UnlearningEvaluator(batch_size=3)])
    trainer.validate(model, datamodule=dm)
    record = read_json(trainer)
    assert_matches_reference(record, reference_metrics(model, dm))
    assert not math.isnan(record["mia_entropy"])


class _Ranks:
    """Just what on_rank_zero reads of a trainer: world size, rank, and a broadcast."""

    def __init__(self, world_size: int, rank: int, rank_zero_value=None) -> None:
        self.world_size, self.is_global_zero = world_size, rank == 0
        self.strategy = self
        self.rank_zero_value = rank_zero_value

    def broadcast(self, obj, src=0):
        assert src == 0
        return obj if self.is_global_zero else self.rank_zero_value


def test_attacks_are_computed_on_rank_zero_only_and_shared():
    calls = []

    def attack():
        calls.append(1)
        return {"mia_svc_entropy": 41.0}

    assert distributed.on_rank_zero(_Ranks(1, 0), attack) == {"mia_svc_entropy": 41.0}
    assert distributed.on_rank_zero(_Ranks(2, 0), attack) == {"mia_svc_entropy": 41.0}
    assert len(calls) == 2
    # another rank never fits: it takes rank 0's result from the broadcast
    assert distributed.on_rank_zero(_Ranks(2, 1, rank_zero_value={"mia_svc_entropy": 41.0}), attack) == {
        "mia_svc_entropy": 41.0
    }
    assert len(calls) == 2
