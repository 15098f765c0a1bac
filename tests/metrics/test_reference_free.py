"""Reference-free targets (``natmu_lightning.metrics.reference_free``) and their rank agreement.

References: hand-built outputs whose attack outcome is fixed by construction (members
certain, non-members uniform), scikit-learn's ``LogisticRegression`` for a general case,
and ``scipy.stats.spearmanr`` for the benchmark's rank correlation.
"""

from __future__ import annotations

import importlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from sklearn.linear_model import LogisticRegression

from natmu_lightning import ClassifierModule, ForgetRemainDataModule, SmallCNN, UnlearningEvaluator
from natmu_lightning.data import RandomForget, SyntheticImages
from natmu_lightning.metrics.functional import MIA_ENTROPY_C, entropy
from natmu_lightning.metrics.reference_free import reference_free_targets
from natmu_lightning.predict import predict_logits
from tests.probability_rows import certain, uniform

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_random_request_targets_the_test_accuracy_and_held_out_non_members():
    remain, remain_y = certain([0, 1, 2] * 10), torch.tensor([0, 1, 2] * 10)
    test, test_y = uniform(20), torch.tensor([0, 1] * 10)  # argmax 0: half right
    # Forget set: 3 still memorised (certain, right), 3 forgotten (uniform; 1 right by argmax 0).
    forget = torch.cat([certain([0, 1, 2]), uniform(3)])
    forget_y = torch.tensor([0, 1, 2, 0, 1, 2])
    out = reference_free_targets(forget, forget_y, remain, remain_y, test, test_y, seed=3)
    assert out["rf_forget_acc_target"] == 50.0  # the test accuracy
    assert out["rf_mia_forget"] == 50.0 and out["rf_mia_target"] == 0.0  # certain rows are members, uniform ones not
    forget_acc = 100 * 4 / 6
    assert out["reference_free_gap"] == pytest.approx((abs(forget_acc - 50.0) + 50.0) / 2)


def test_whole_class_targets_zero_and_sub_class_its_own_test_images():
    remain, remain_y = certain([0, 1] * 10), torch.tensor([0, 1] * 10)
    test, test_y = uniform(10), torch.tensor([0, 1] * 5)
    forget, forget_y = uniform(4), torch.tensor([2, 2, 2, 2])
    forget_test, forget_test_y = certain([2, 2, 0]), torch.tensor([2, 2, 2])
    whole = reference_free_targets(forget, forget_y, remain, remain_y, test, test_y, forget_test, forget_test_y)
    assert whole["rf_forget_acc_target"] == 0.0  # no remaining sample of class 2: a Retrain never predicts it
    # The attack (remaining vs the test set outside the kind) scores the kind's test images:
    # certain rows look like members, the forgotten (uniform) forget rows do not.
    assert (whole["rf_mia_target"], whole["rf_mia_forget"]) == (100.0, 0.0)
    assert whole["reference_free_gap"] == pytest.approx((0.0 + 100.0) / 2)  # forget accuracy 0 (argmax 0)
    # The same split where class 2 still has remaining samples (a sub-class request): the target
    # is the accuracy on the forgotten kind's test images.
    remain_y2 = torch.tensor([0, 1] * 9 + [2, 2])
    remain2 = torch.cat([certain([0, 1] * 9), certain([2, 2])])
    sub = reference_free_targets(forget, forget_y, remain2, remain_y2, test, test_y, forget_test, forget_test_y)
    assert sub["rf_forget_acc_target"] == pytest.approx(100 * 2 / 3)


def test_general_case_matches_scikit_learn_on_the_seeded_half():
    generator = torch.Generator().manual_seed(0)
    logits = lambda n: torch.randn(n, 4, generator=generator) * 2  # noqa: E731
    remain, test, forget = (logits(n).softmax(1) for n in (60, 40, 12))
    labels = lambda n: torch.randint(0, 4, (n,), generator=generator)  # noqa: E731
    remain_y, test_y, forget_y = labels(60), labels(40), labels(12)
    out = reference_free_targets(forget, forget_y, remain, remain_y, test, test_y, seed=7)
    order = torch.randperm(40, generator=torch.Generator().manual_seed(7))
    held_out, fitted = test[order[:20]], test[order[20:]]
    x = torch.cat([entropy(remain.double()), entropy(fitted.double())]).numpy()[:, None]
    y = np.r_[np.ones(60), np.zeros(20)]
    attack = LogisticRegression(C=MIA_ENTROPY_C, class_weight="balanced", tol=1e-12, max_iter=10_000).fit(x, y)
    rate = lambda p: 100 * attack.predict(entropy(p.double()).numpy()[:, None]).mean()  # noqa: E731
    assert out["rf_mia_forget"] == pytest.approx(rate(forget))
    assert out["rf_mia_target"] == pytest.approx(rate(held_out))
    assert out["rf_forget_acc_target"] == pytest.approx(100 * float((test.argmax(1) == test_y).float().mean()))


def test_the_evaluator_logs_and_writes_the_reference_free_gap(tmp_path):
    source = SyntheticImages(num_classes=4, train_per_class=15, test_per_class=9, channels=1, height=8, width=8, seed=3)
    dm = ForgetRemainDataModule(
        source=source, forget=RandomForget(0.2), batch_size=16, crop_padding=1, horizontal_flip=False
    )
    torch.manual_seed(0)
    model = ClassifierModule(SmallCNN(num_classes=4, width=4), stream="remain")
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        default_root_dir=str(tmp_path),
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[UnlearningEvaluator()],
    )
    trainer.fit(model, datamodule=dm)
    written = json.loads((Path(trainer.log_dir) / "unlearning_metrics.json").read_text())
    assert math.isfinite(written["reference_free_gap"])
    assert float(trainer.callback_metrics["gap/reference_free"]) == pytest.approx(written["reference_free_gap"])
    # the values are those of the trained model's outputs on the datamodule's splits, seeded by the run
    splits = dm.evaluation_splits()
    probs = {name: predict_logits(model, images).softmax(1) for name, (images, _) in splits.items()}
    labels = {name: targets for name, (_, targets) in splits.items()}
    expected = reference_free_targets(
        probs["forget"],
        labels["forget"],
        probs["remain"],
        labels["remain"],
        probs["test"],
        labels["test"],
        seed=dm.seed,
    )
    assert {key: written[key] for key in expected} == pytest.approx(expected)


def load_quality():
    if str(BENCHMARKS.parent) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS.parent))
    return importlib.import_module("benchmarks.quality")


def test_rank_agreement_is_spearmans_rho():
    stats = pytest.importorskip("scipy.stats")
    quality = load_quality()
    a, b = [3.0, 1.0, 2.0, 2.0, 5.0, 0.5], [2.5, 0.1, 3.0, 3.0, 4.0, 1.0]
    assert quality.spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic)
    assert math.isnan(quality.spearman([1.0, 2.0], [2.0, 1.0]))
    rows = [
        {"method": m, "status": "ok", "avg_gap": g, "reference_free_gap": r}
        for m, g, r in [("retrain", 0.0, 9.0), ("a", 1.0, 1.0), ("b", 2.0, 3.0), ("c", 3.0, 2.0), ("d", 4.0, 4.0)]
    ]
    summary = quality.summarise(rows)
    text = quality.rank_agreement(summary, rows)
    expected = stats.spearmanr([1, 2, 3, 4], [1, 3, 2, 4]).statistic
    assert f"{expected:.2f} over 4 runs" in text and f"{expected:.2f} over the 4 methods' means" in text
