"""torchmetrics classes: equal to the functional forms on one process and on a 2-process gloo pool."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from sklearn.linear_model import LogisticRegression

from natmu_lightning.metrics import EntropyMIA, JSDivergence, KLDivergenceToReference, SplitAccuracy
from natmu_lightning.metrics import functional as MF


def make_data(seed=0):
    g = torch.Generator().manual_seed(seed)
    member = (torch.randn(37, 5, generator=g) * 3).softmax(1)
    nonmember = torch.randn(23, 5, generator=g).softmax(1)
    target = (torch.randn(11, 5, generator=g) * 2).softmax(1)
    labels = torch.randint(0, 5, (11,), generator=g)
    reference = torch.randn(11, 5, generator=g).softmax(1)
    return member, nonmember, target, labels, reference


def expected_values(member, nonmember, target, labels, reference):
    entropies = [MF.entropy(p.double()).numpy().reshape(-1, 1) for p in (member, nonmember, target)]
    clf = LogisticRegression(C=2.0, class_weight="balanced", tol=1e-12, max_iter=10_000)
    import numpy as np

    clf.fit(np.vstack(entropies[:2]), np.r_[np.ones(len(member)), np.zeros(len(nonmember))])
    return {
        "acc": MF.accuracy(target, labels),
        "mia": 100.0 * clf.predict(entropies[2]).mean(),
        "kl": MF.kl_divergence(reference, target),
        "js": MF.js_divergence(reference, target),
    }


def feed(metrics, member, nonmember, target, labels, reference):
    acc, mia, kl, js = metrics
    acc.update(target, labels)
    mia.update(member, "member")
    mia.update(nonmember, "nonmember")
    mia.update(target, "target")
    kl.update(reference, target)
    js.update(reference, target)


def computed(metrics):
    return {name: float(m.compute()) for name, m in zip(("acc", "mia", "kl", "js"), metrics)}


def new_metrics():
    return SplitAccuracy(), EntropyMIA(), KLDivergenceToReference(), JSDivergence()


def test_single_process_matches_functional_and_sklearn():
    data = make_data()
    metrics = new_metrics()
    # Feed in two uneven chunks to exercise accumulation.
    for part in (slice(0, 3), slice(3, None)):
        feed(metrics, *(t[part] for t in data))
    got, want = computed(metrics), expected_values(*data)
    assert got["acc"] == want["acc"] and got["mia"] == want["mia"]
    assert got["kl"] == pytest.approx(want["kl"], rel=1e-12)
    assert got["js"] == pytest.approx(want["js"], rel=1e-12)


def test_role_is_validated():
    with pytest.raises(ValueError, match="role"):
        EntropyMIA().update(torch.ones(1, 2) / 2, "forget")


def test_accuracy_wants_one_label_per_row():
    """A (N, 1) label column would broadcast against the (N,) predictions into N x N matches."""
    metric = SplitAccuracy()
    with pytest.raises(ValueError, match=r"labels must have shape \(3,\)"):
        metric.update(torch.eye(3), torch.arange(3).unsqueeze(1))
    metric.update(torch.eye(3), torch.arange(3))
    assert metric.compute().item() == 100.0 and metric.count.item() == 3


def _worker(rank, world, port, path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    member, nonmember, target, labels, reference = make_data()
    # Uneven shards; rank 1 holds NO target (forget) sample at all.
    shards = {
        "member": (member[:30], member[30:]),
        "nonmember": (nonmember[:5], nonmember[5:]),
        "target": (slice(0, 11), slice(0, 0)),
    }
    metrics = new_metrics()
    acc, mia, kl, js = metrics
    t = shards["target"][rank]
    acc.update(target[t], labels[t])
    mia.update(shards["member"][rank], "member")
    mia.update(shards["nonmember"][rank], "nonmember")
    mia.update(target[t], "target")
    kl.update(reference[t], target[t])
    js.update(reference[t], target[t])
    result = computed(metrics)
    if rank == 0:
        torch.save(result, path)
    dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(180)
def test_two_process_gloo_pool_uneven_and_empty_rank(tmp_path):
    path = tmp_path / "result.pt"
    mp.spawn(_worker, args=(2, free_port(), str(path)), nprocs=2, join=True)
    got = torch.load(path)
    want = expected_values(*make_data())
    assert got["acc"] == want["acc"] and got["mia"] == want["mia"]
    assert got["kl"] == pytest.approx(want["kl"], rel=1e-12)
    assert got["js"] == pytest.approx(want["js"], rel=1e-12)


def test_entropy_mia_class_runs_the_functional_attack():
    """The class and ``mia_entropy`` share one implementation: equal to the last bit, also where
    ``100 * (3 / 11)`` and ``100 * 3 / 11`` round apart (3 of 11 confident targets are members)."""
    member, nonmember = torch.tensor([[0.99, 0.01]] * 5), torch.tensor([[0.5, 0.5]] * 5)
    target = torch.cat([member[:3], nonmember, nonmember[:3]])
    mia = EntropyMIA()
    for probs, role in ((member, "member"), (nonmember, "nonmember"), (target, "target")):
        mia.update(probs, role)
    assert float(mia.compute()) == MF.mia_entropy(member, nonmember, target) == 100.0 * 3 / 11
