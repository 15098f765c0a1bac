"""A metric of one's own is one class: ``UnlearningEvaluator(extra_metrics=...)`` records and logs it,
for the model and for the reference, and runs a slower one only when ``attacks`` names it."""

from __future__ import annotations

import pytest
import torch

from natmu_lightning import UnlearningEvaluator
from natmu_lightning.metrics.evaluation import EvaluationMetric
from natmu_lightning.metrics.splits import LOG_KEYS, Accuracy
from natmu_lightning.predict import predict_logits
from tests.tiny_runs import make_dm, make_model, make_trainer, read_csv, read_json


class ForgetConfidence(EvaluationMetric):
    """Mean top probability on the forget set."""

    keys = {"forget_confidence": "forget/confidence"}

    def compute(self, outputs, earlier):
        return {"forget_confidence": float(outputs.probs["forget"].max(dim=1).values.double().mean())}


class ConfidenceGap(EvaluationMetric):
    """The reference's forget confidence minus the model's: reads the reference's metrics."""

    keys = {"confidence_gap": "gap/confidence"}
    reads_reference_metrics = True

    def compute(self, outputs, earlier):
        return {"confidence_gap": outputs.reference_metrics["forget_confidence"] - earlier["forget_confidence"]}


class CountingAttack(EvaluationMetric):
    """A slower attack that only counts how often it runs."""

    keys = {"counting_attack": None}
    attack = "counting"

    def __init__(self):
        self.runs = 0

    def compute(self, outputs, earlier):
        self.runs += 1
        return {"counting_attack": float(self.runs)}


def mean_confidence(model, images) -> float:
    return float(predict_logits(model, images).softmax(dim=1).max(dim=1).values.double().mean())


def test_an_extra_metric_is_recorded_and_logged_for_the_model_and_the_reference(tmp_path):
    reference_model = make_model(width=4)
    with torch.no_grad():
        for parameter in reference_model.parameters():
            parameter.mul_(-1.0)
    torch.save(reference_model.backbone.state_dict(), tmp_path / "reference.pt")
    evaluator = UnlearningEvaluator(
        reference_ckpt=str(tmp_path / "reference.pt"),
        batch_size=16,
        extra_metrics=[ForgetConfidence(), ConfidenceGap()],
    )
    assert evaluator.logged_keys == frozenset(LOG_KEYS.values()) | {"forget/confidence", "gap/confidence"}
    model, dm = make_model(), make_dm()
    trainer = make_trainer(tmp_path, [evaluator])
    trainer.validate(model, datamodule=dm, verbose=False)

    record = read_json(trainer)
    forget_images = dm.evaluation_splits()["forget"][0]
    own, reference = mean_confidence(model, forget_images), mean_confidence(reference_model, forget_images)
    assert record["forget_confidence"] == pytest.approx(own, rel=1e-6)
    assert record["reference"]["forget_confidence"] == pytest.approx(reference, rel=1e-6)
    assert "confidence_gap" not in record["reference"]  # needs a reference: not computed for the reference
    assert record["confidence_gap"] == pytest.approx(reference - own, abs=1e-6)
    row = next(r for r in read_csv(trainer) if r.get("forget/confidence"))
    assert float(row["forget/confidence"]) == pytest.approx(own, rel=1e-6)
    assert float(row["gap/confidence"]) == pytest.approx(reference - own, abs=1e-6)


def test_an_extra_slower_attack_runs_at_the_final_evaluation_when_named(tmp_path):
    attack = CountingAttack()
    evaluator = UnlearningEvaluator(batch_size=16, attacks=("counting",), extra_metrics=[attack])
    trainer = make_trainer(tmp_path, [evaluator], max_epochs=3, limit_train_batches=1)
    trainer.fit(make_model(), datamodule=make_dm())
    assert attack.runs == 1 and read_json(trainer)["counting_attack"] == 1.0
    assert "mia_svc_entropy" not in read_json(trainer)  # the built-in attacks are not named

    unnamed = CountingAttack()
    evaluator = UnlearningEvaluator(batch_size=16, extra_metrics=[unnamed])
    make_trainer(tmp_path / "unnamed", [evaluator]).validate(make_model(), datamodule=make_dm(), verbose=False)
    assert unnamed.runs == 0


def test_extra_metrics_must_not_clash_with_the_built_in_ones():
    with pytest.raises(ValueError, match="forget_acc"):
        UnlearningEvaluator(extra_metrics=[Accuracy("forget")])
    with pytest.raises(ValueError, match="unknown attacks"):
        UnlearningEvaluator(attacks=("counting",))
