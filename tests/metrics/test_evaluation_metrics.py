"""The evaluator's metric objects (``natmu_lightning.metrics.splits``, ``.evaluation``), one by one.

Every expected value is worked out by hand on tiny outputs built so that the answer follows
from their construction: confident rows (members: low entropy, high confidence, low loss)
against uniform ones (non-members), counted by hand.
"""

from __future__ import annotations

import math

import pytest
import torch

from natmu_lightning.metrics import splits as S
from natmu_lightning.metrics.evaluation import (
    EvaluationMetric,
    EvaluationOutputs,
    check_attacks,
    compute_metrics,
    logged_names,
)
from natmu_lightning.metrics.names import RENAMED_KEYS
from tests.probability_rows import certain, uniform


def outputs(**splits: tuple[torch.Tensor, list[int]]) -> EvaluationOutputs:
    return EvaluationOutputs(
        probs={name: probs for name, (probs, _) in splits.items()},
        labels={name: torch.tensor(labels, dtype=torch.long) for name, (_, labels) in splits.items()},
    )


# A random-request evaluation: members confident, test samples uniform, and a forget set of
# 3 confident rows and 2 uniform ones (argmax 0: right for label 0 only).
REMAIN = (certain([0, 1, 2] * 4), [0, 1, 2] * 4)
TEST = (uniform(12), [0, 1, 2] * 4)
FORGET = (torch.cat([certain([0, 1, 2]), uniform(2)]), [0, 1, 2, 0, 1])


def test_accuracy_counts_argmax_hits_on_its_split():
    metric = S.Accuracy("forget")
    assert dict(metric.keys) == {"forget_acc": "forget/acc"}
    # argmax hits: the 3 confident rows and the uniform row labelled 0, of 5
    assert metric.compute(outputs(forget=FORGET), {}) == {"forget_acc": 100.0 * 4 / 5}
    assert S.Accuracy("forget_test").compute(outputs(forget=FORGET), {}) == {}  # no such split: no value


def test_entropy_attack_members_remain_non_members_the_whole_test_set():
    metric = S.EntropyAttack()
    assert dict(metric.keys) == {"mia_entropy": "mia/entropy"}
    # Confident rows are members, uniform ones not: 3 of the 5 forget rows.
    assert metric.compute(outputs(remain=REMAIN, test=TEST, forget=FORGET), {}) == {"mia_entropy": 60.0}
    # The test samples outside the forgotten kind look like members; only the forgotten
    # kind's test samples (uniform) tell the attack what a non-member is. Counted among the
    # non-members, they make the confident forget rows members (4 of 4); left out, members and
    # non-members would be alike and nothing would be predicted member.
    class_request = outputs(
        remain=REMAIN,
        test=(certain([0, 1, 2] * 2), [0, 1, 2] * 2),
        forget_test=(uniform(6), [0] * 6),
        forget=(torch.cat([certain([0, 0, 0]), uniform(1)]), [0] * 4),
    )
    assert metric.compute(class_request, {}) == {"mia_entropy": 75.0}


def test_old_names_repeat_the_new_names_values():
    metric = S.OldNames()
    assert set(metric.keys) == set(RENAMED_KEYS)
    assert dict(metric.keys) == {"retain_acc": "retain/acc"}
    assert metric.compute(outputs(), {"remain_acc": 12.5}) == {"retain_acc": 12.5}


def test_reference_free_gap_against_the_test_accuracy_and_held_out_non_members():
    metric = S.ReferenceFreeGap()
    assert dict(metric.keys) == {
        "rf_forget_acc_target": None,
        "rf_mia_forget": None,
        "rf_mia_target": None,
        "reference_free_gap": "gap/reference_free",
    }
    evaluation = outputs(remain=REMAIN, test=TEST, forget=FORGET)
    # target: the test accuracy (argmax 0, right for the 4 of 12 labelled 0); the attack calls
    # the 3 confident forget rows members (of 5) and no held-out (uniform) test sample
    expected_target, forget_acc = 100.0 * 4 / 12, 100.0 * 4 / 5
    got = metric.compute(evaluation, {})
    assert got["rf_forget_acc_target"] == pytest.approx(expected_target)
    assert (got["rf_mia_forget"], got["rf_mia_target"]) == (60.0, 0.0)
    assert got["reference_free_gap"] == pytest.approx((abs(forget_acc - expected_target) + 60.0) / 2)
    # whole classes forgotten: a model never trained on them scores 0 on them
    whole = EvaluationOutputs(evaluation.probs, evaluation.labels, whole_classes=True)
    assert metric.compute(whole, {})["reference_free_gap"] == pytest.approx((forget_acc + 60.0) / 2)


def test_svc_attack_reports_the_forget_rows_predicted_non_member_on_each_feature():
    metric = S.SVCAttack()
    assert metric.attack == "svc"
    assert dict(metric.keys) == {
        "mia_svc_confidence": "mia/svc_confidence",
        "mia_svc_entropy": "mia/svc_entropy",
        "mia_svc_m_entropy": "mia/svc_m_entropy",
    }
    # every feature puts confident rows with the members: the 2 uniform forget rows of 5 are non-members
    got = metric.compute(outputs(remain=REMAIN, test=TEST, forget=FORGET), {})
    assert got == {key: pytest.approx(40.0) for key in metric.keys}


def test_loss_attack_separates_forget_from_the_forgotten_kinds_test_samples():
    metric = S.LossAttack()
    assert metric.attack == "loss_cv"
    assert dict(metric.keys) == {"mia_loss_cv": "mia/loss_cv"}
    confident = (certain([0, 1] * 5), [0, 1] * 5)
    # forget losses ln(1/0.98), test losses ln 3: every fold tells them apart
    assert metric.compute(outputs(forget=confident, test=TEST), {}) == {"mia_loss_cv": 100.0}
    # with the forgotten kind's test samples (the same losses) as non-members, the attacker
    # cannot tell: a constant guess, right on half of every fold
    same_kind = outputs(forget=confident, test=TEST, forget_test=confident)
    assert metric.compute(same_kind, {}) == {"mia_loss_cv": 50.0}
    one_sample = outputs(forget=(certain([0]), [0]), test=TEST)
    assert math.isnan(metric.compute(one_sample, {})["mia_loss_cv"])


def with_reference(reference_forget: torch.Tensor, forget: torch.Tensor, **metrics: float) -> EvaluationOutputs:
    return EvaluationOutputs(
        probs={"forget": forget},
        labels={"forget": torch.zeros(forget.shape[0], dtype=torch.long)},
        reference_probs={"forget": reference_forget},
        reference_metrics=metrics,
    )


def test_kl_to_reference_on_the_forget_set():
    metric = S.KLToReference()
    assert dict(metric.keys) == {"kl_to_reference": "ref/kl"} and metric.reference_splits == ("forget",)
    # rows: KL([1, 0] || [0.5, 0.5]) = ln 2, and 0 for identical rows
    evaluation = with_reference(torch.tensor([[1.0, 0.0], [0.3, 0.7]]), torch.tensor([[0.5, 0.5], [0.3, 0.7]]))
    assert metric.compute(evaluation, {})["kl_to_reference"] == pytest.approx(math.log(2) / 2, abs=1e-7)


def test_js_to_reference_on_the_forget_set():
    metric = S.JSToReference()
    assert dict(metric.keys) == {"js_to_reference": "ref/js"} and metric.reference_splits == ("forget",)
    # rows: JS of disjoint distributions = ln 2, and 0 for identical rows
    evaluation = with_reference(torch.tensor([[1.0, 0.0], [0.3, 0.7]]), torch.tensor([[0.0, 1.0], [0.3, 0.7]]))
    assert metric.compute(evaluation, {})["js_to_reference"] == pytest.approx(math.log(2) / 2, abs=1e-7)


def test_average_gap_reads_the_values_computed_before_it():
    metric = S.AverageGap()
    assert dict(metric.keys) == {"avg_gap": "gap/avg"} and metric.reads_reference_metrics
    reference = {"test_acc": 88.0, "remain_acc": 100.0, "forget_acc": 84.0, "mia_entropy": 40.0}
    earlier = {"test_acc": 90.0, "remain_acc": 100.0, "forget_acc": 80.0, "mia_entropy": 50.0, "kl_to_reference": 3.0}
    evaluation = with_reference(uniform(1, 2), uniform(1, 2), **reference)
    assert metric.compute(evaluation, earlier) == {"avg_gap": (2 + 0 + 4 + 10) / 4}


def test_tug_of_war_reads_the_accuracies_computed_before_it():
    metric = S.TugOfWar()
    assert dict(metric.keys) == {"tug_of_war": "gap/tow"} and metric.reads_reference_metrics
    reference = {"forget_acc": 90.0, "remain_acc": 100.0, "test_acc": 90.0}
    earlier = {"forget_acc": 80.0, "remain_acc": 90.0, "test_acc": 90.0}
    got = metric.compute(with_reference(uniform(1, 2), uniform(1, 2), **reference), earlier)
    assert got["tug_of_war"] == pytest.approx(0.9 * 0.9 * 1.0)


def test_the_key_tables_are_derived_from_the_metrics():
    assert S.LOG_KEYS == {
        "forget_acc": "forget/acc",
        "remain_acc": "remain/acc",
        "test_acc": "test/acc",
        "mia_entropy": "mia/entropy",
        "retain_acc": "retain/acc",
        "forget_test_acc": "forget_test/acc",
        "reference_free_gap": "gap/reference_free",
        "mia_svc_confidence": "mia/svc_confidence",
        "mia_svc_entropy": "mia/svc_entropy",
        "mia_svc_m_entropy": "mia/svc_m_entropy",
        "mia_loss_cv": "mia/loss_cv",
        "kl_to_reference": "ref/kl",
        "js_to_reference": "ref/js",
        "avg_gap": "gap/avg",
        "tug_of_war": "gap/tow",
    }
    assert S.ATTACKS == ("svc", "loss_cv")
    # the record's order: the metrics' order, each metric's keys in its own order (no
    # forget_test split here, so no forget_test_acc)
    evaluation = outputs(remain=REMAIN, test=TEST, forget=FORGET)
    assert list(S.split_metrics(dict(evaluation.probs), dict(evaluation.labels), S.ATTACKS)) == [
        key for metric in S.METRICS if not metric.needs_reference for key in metric.keys if key != "forget_test_acc"
    ]


class ForgetConfidence(EvaluationMetric):
    """Mean top probability on the forget set: a metric of one's own."""

    keys = {"forget_confidence": "forget/confidence"}

    def compute(self, outputs, earlier):
        return {"forget_confidence": float(outputs.probs["forget"].max(dim=1).values.double().mean())}


class ForgetAccuracyTwice(EvaluationMetric):
    """Reads a value computed before it."""

    keys = {"forget_acc_twice": None}

    def compute(self, outputs, earlier):
        return {"forget_acc_twice": 2 * earlier["forget_acc"]}


def test_compute_metrics_runs_them_in_order_and_skips_those_needing_a_reference_without_one():
    evaluation = outputs(forget=FORGET)
    metrics = [S.Accuracy("forget"), ForgetAccuracyTwice(), ForgetConfidence(), S.KLToReference(), S.AverageGap()]
    got = compute_metrics(metrics, evaluation)
    # 3 rows at 0.98 and 2 at 1/3
    assert got == {
        "forget_acc": 80.0,
        "forget_acc_twice": 160.0,
        "forget_confidence": pytest.approx((3 * 0.98 + 2 / 3) / 5),
    }
    assert logged_names(metrics) == {
        "forget_acc": "forget/acc",
        "forget_confidence": "forget/confidence",
        "kl_to_reference": "ref/kl",
        "avg_gap": "gap/avg",
    }


def test_two_metrics_may_not_share_a_key():
    with pytest.raises(ValueError, match="forget_acc"):
        logged_names([S.Accuracy("forget"), S.Accuracy("forget")])


def test_attacks_are_named_by_the_metrics():
    check_attacks(S.METRICS, ("svc",))
    with pytest.raises(ValueError, match=r"unknown attacks \['svm'\]; choose from \('svc', 'loss_cv'\)"):
        check_attacks(S.METRICS, ("svm",))
