"""Pure functions that judge an unlearned model (docs/design.md section 3).

Everything here works on plain tensors: no Lightning, no state. Probabilities are
``(N, C)`` float tensors of softmax outputs, labels are ``(N,)`` integer tensors.
Accuracies and attack scores are in percent (0..100).

Three membership-inference protocols live here, each under its own name, because
the literature reports different quantities under the one word "MIA":

* :func:`mia_entropy`: the NatMU paper's protocol, and the one meant by "MIA" in
  this package (balanced logistic regression on the softmax entropy, members =
  D_r, non-members = D_t, reported: % of D_f predicted *member*; the target is
  Retrain's value, not 0).
* :func:`svc_mia`: the SalUn / "Model sparsity can simplify machine unlearning"
  shadow-SVC protocol (reported: % of the target set predicted *non-member*).
* :func:`loss_mia_cv`: a loss-based attack separating D_f from D_t, scored by
  cross-validated accuracy (50 is ideal).
"""

from __future__ import annotations

from natmu_lightning.metrics.functional.attacks import SVC_FEATURES, loss_mia_cv, svc_mia
from natmu_lightning.metrics.functional.divergences import (
    js_divergence,
    js_divergence_rows,
    kl_divergence,
    kl_divergence_rows,
)
from natmu_lightning.metrics.functional.entropy_mia import (
    MIA_ENTROPY_C,
    entropy_attack_rates,
    fit_balanced_logistic_1d,
    mia_entropy,
    mia_entropy_rates,
)
from natmu_lightning.metrics.functional.features import accuracy, entropy, m_entropy, sample_losses
from natmu_lightning.metrics.functional.summaries import (
    AVG_GAP_KEYS,
    COLLAPSE_FRACTION,
    TUG_OF_WAR_KEYS,
    avg_gap,
    collapse_reason,
    tug_of_war,
)

__all__ = [
    "AVG_GAP_KEYS",
    "TUG_OF_WAR_KEYS",
    "accuracy",
    "entropy",
    "m_entropy",
    "sample_losses",
    "fit_balanced_logistic_1d",
    "MIA_ENTROPY_C",
    "mia_entropy",
    "mia_entropy_rates",
    "entropy_attack_rates",
    "kl_divergence",
    "kl_divergence_rows",
    "js_divergence",
    "js_divergence_rows",
    "avg_gap",
    "collapse_reason",
    "COLLAPSE_FRACTION",
    "tug_of_war",
    "svc_mia",
    "SVC_FEATURES",
    "loss_mia_cv",
]
