"""The literature's other membership attacks, each under its own name: the SalUn-family
shadow SVC and a cross-validated loss attack."""

from __future__ import annotations

import torch
from torch import Tensor

from natmu_lightning.metrics.functional._checks import _check_labels, _check_probs, _check_same_classes
from natmu_lightning.metrics.functional.features import entropy, m_entropy

SVC_FEATURES = ("confidence", "entropy", "m_entropy")
"""The per-sample features :func:`svc_mia` can attack on."""


def _svc_feature(probs: Tensor, labels: Tensor, feature: str) -> Tensor:
    p = probs.detach().to("cpu", torch.float64)
    y = labels.to("cpu")
    if feature == "confidence":
        return p.gather(1, y[:, None]).squeeze(1)
    if feature == "entropy":
        return entropy(p)
    return m_entropy(p, y)


def svc_mia(
    shadow_train_probs: Tensor,
    shadow_train_labels: Tensor,
    shadow_test_probs: Tensor,
    shadow_test_labels: Tensor,
    target_probs: Tensor,
    target_labels: Tensor,
    feature: str,
) -> float:
    """The SalUn-family shadow-SVC attack ("SVC protocol"), in percent non-member.

    Follows ``SVC_MIA`` / ``SVC_fit_predict`` of the "Model sparsity can simplify
    machine unlearning" and SalUn code (``evaluation/SVC_MIA.py``), as used for
    their "MIA-efficacy" (``SVC_MIA_forget_efficacy``: shadow train = the first
    ``len(D_t)`` samples of D_r, shadow test = D_t, target_train = None,
    target_test = D_f):

    * one scalar feature per sample: ``"confidence"`` (``p_y``), ``"entropy"`` or
      ``"m_entropy"`` (the correct formula of :func:`m_entropy`; the reference code's
      m-entropy is buggy), computed here in float64;
    * the two shadow sets are truncated to the smaller one's size by keeping their
      first rows (the reference takes ``Subset(retain, range(len(test)))``);
    * ``sklearn.svm.SVC(C=3, gamma="auto", kernel="rbf")`` is fit on shadow train
      (member, label 1) against shadow test (non-member, label 0);
    * the result is ``100 * (1 - mean(predict(target)))``: the percentage of target
      rows predicted NON-member. This is a different quantity from
      :func:`mia_entropy` ("% predicted member") and must not be reported as "MIA".

    Args:
        shadow_train_probs: ``(N_a, C)`` probabilities of known members.
        shadow_train_labels: ``(N_a,)`` their labels.
        shadow_test_probs: ``(N_b, C)`` probabilities of known non-members.
        shadow_test_labels: ``(N_b,)`` their labels.
        target_probs: ``(N_t, C)`` probabilities of the set to score (e.g. D_f).
        target_labels: ``(N_t,)`` their labels.
        feature: ``"confidence"``, ``"entropy"`` or ``"m_entropy"``.

    Returns:
        ``100 * fraction of target rows predicted non-member``; ``nan`` if
        ``N_t == 0``.

    Example:
        >>> members = torch.tensor([[0.99, 0.01]] * 4 + [[0.98, 0.02]] * 4)
        >>> nonmembers = torch.tensor([[0.55, 0.45]] * 4 + [[0.6, 0.4]] * 4)
        >>> zeros = torch.zeros(8, dtype=torch.long)
        >>> svc_mia(members, zeros, nonmembers, zeros, nonmembers[:2], zeros[:2], "confidence")
        100.0
    """
    if feature not in SVC_FEATURES:
        raise ValueError(f"feature must be one of {SVC_FEATURES}, got {feature!r}")
    _check_probs(shadow_train_probs, "shadow_train_probs", allow_empty=False)
    _check_probs(shadow_test_probs, "shadow_test_probs", allow_empty=False)
    _check_probs(target_probs, "target_probs")
    _check_same_classes(
        ("shadow_train_probs", shadow_train_probs),
        ("shadow_test_probs", shadow_test_probs),
        ("target_probs", target_probs),
    )
    shadow_train_labels = _check_labels(
        shadow_train_labels, shadow_train_probs, "shadow_train_labels", "shadow_train_probs"
    )
    shadow_test_labels = _check_labels(shadow_test_labels, shadow_test_probs, "shadow_test_labels", "shadow_test_probs")
    target_labels = _check_labels(target_labels, target_probs, "target_labels", "target_probs")
    if target_probs.shape[0] == 0:
        return float("nan")

    from sklearn.svm import SVC  # the protocol *is* this SVC

    n = min(shadow_train_probs.shape[0], shadow_test_probs.shape[0])
    f_in = _svc_feature(shadow_train_probs[:n], shadow_train_labels[:n], feature)
    f_out = _svc_feature(shadow_test_probs[:n], shadow_test_labels[:n], feature)
    f_t = _svc_feature(target_probs, target_labels, feature)
    for name, feat in (("shadow_train_probs", f_in), ("shadow_test_probs", f_out), ("target_probs", f_t)):
        if not bool(torch.isfinite(feat).all()):
            raise ValueError(f"{name} gives non-finite {feature} features")
    import numpy as np

    x = torch.cat([f_in, f_out]).numpy().reshape(-1, 1)
    y = np.concatenate([np.ones(n, dtype=np.int64), np.zeros(n, dtype=np.int64)])
    clf = SVC(C=3, gamma="auto", kernel="rbf")
    clf.fit(x, y)
    pred = clf.predict(f_t.numpy().reshape(-1, 1))
    return 100.0 * (1.0 - float(pred.mean()))


def loss_mia_cv(forget_losses: Tensor, test_losses: Tensor, n_splits: int = 5, seed: int = 0) -> float:
    """Loss-based attack separating D_f from D_t, scored by cross-validated accuracy.

    The larger of the two sets is subsampled without replacement (numpy
    ``default_rng(seed)``) to the size of the smaller one; then
    ``cross_val_score(LogisticRegression(), X, y, cv=StratifiedKFold(n_splits,
    shuffle=True, random_state=seed), scoring="accuracy")`` with ``X`` the per-sample
    losses and ``y`` = 1 for forget, 0 for test. 50 is ideal (the attacker cannot
    tell forgotten samples from unseen ones); this is not the paper's "MIA".

    Args:
        forget_losses: ``(N_f,)`` per-sample losses on D_f.
        test_losses: ``(N_t,)`` per-sample losses on D_t.
        n_splits: folds, at least 2 and at most ``min(N_f, N_t)``.
        seed: seed of the subsampling and of the fold shuffling.

    Returns:
        Mean cross-validated accuracy in percent.

    Example:
        >>> low = torch.linspace(0.0, 0.1, 20)
        >>> high = torch.linspace(5.0, 6.0, 30)
        >>> loss_mia_cv(low, high)
        100.0
    """
    for name, losses in (("forget_losses", forget_losses), ("test_losses", test_losses)):
        if not isinstance(losses, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(losses).__name__}")
        if losses.dim() != 1:
            raise ValueError(f"{name} must be a 1-D (N,) tensor, got shape {tuple(losses.shape)}")
        if not bool(torch.isfinite(losses.detach().to(torch.float64)).all()):
            raise ValueError(f"{name} contains non-finite values")
    if isinstance(n_splits, bool) or not isinstance(n_splits, int) or n_splits < 2:
        raise ValueError(f"n_splits must be an integer >= 2, got {n_splits!r}")
    n = min(forget_losses.shape[0], test_losses.shape[0])
    if n < n_splits:
        raise ValueError(
            f"n_splits={n_splits} needs at least {n_splits} samples in each set, got "
            f"{forget_losses.shape[0]} forget_losses and {test_losses.shape[0]} test_losses"
        )

    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    rng = np.random.default_rng(seed)
    f = forget_losses.detach().to("cpu", torch.float64).numpy()
    t = test_losses.detach().to("cpu", torch.float64).numpy()
    if f.shape[0] > n:
        f = f[rng.choice(f.shape[0], size=n, replace=False)]
    if t.shape[0] > n:
        t = t[rng.choice(t.shape[0], size=n, replace=False)]
    x = np.concatenate([f, t]).reshape(-1, 1)
    y = np.concatenate([np.ones(n, dtype=np.int64), np.zeros(n, dtype=np.int64)])
    cv = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    scores = cross_val_score(LogisticRegression(), x, y, cv=cv, scoring="accuracy")
    return 100.0 * float(scores.mean())
