"""Hand-made probability rows for metric tests, whose expected values are worked out by hand."""

import torch


def certain(labels: list[int], classes: int = 3) -> torch.Tensor:
    """Confident, correct rows on ``labels`` (0.98 there, 0.01 elsewhere, for 3 classes): all of
    the same, near-zero entropy, what members look like."""
    probs = torch.full((len(labels), classes), 0.01)
    probs[torch.arange(len(labels)), torch.tensor(labels)] = 1 - 0.01 * (classes - 1)
    return probs


def uniform(count: int, classes: int = 3) -> torch.Tensor:
    """Maximal-entropy rows (argmax: class 0): what non-members look like here."""
    return torch.full((count, classes), 1.0 / classes)
