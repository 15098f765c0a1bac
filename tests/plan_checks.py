"""The invariants every hybrid plan must hold, checked by the hybrid and datamodule tests."""

import torch


def check_plan(plan, forget, labels, probs, remain, k):
    assert set(plan) == {"forget_index", "remain_index", "mask_id", "label"}
    assert all(v.dtype == torch.int64 and v.ndim == 1 and v.numel() == forget.numel() * k for v in plan.values())
    # k rows per forgetting sample, in order, masks 0..k-1.
    assert torch.equal(plan["forget_index"], forget.repeat_interleave(k))
    assert torch.equal(plan["mask_id"], torch.arange(k).repeat(forget.numel()))
    # Never the sample's own class; always the remaining image's own class.
    assert torch.all(plan["label"] != labels[plan["forget_index"]])
    assert torch.equal(plan["label"], labels[plan["remain_index"]])
    # Remaining images: all distinct, all from the remaining set.
    assert plan["remain_index"].unique().numel() == plan["remain_index"].numel()
    assert torch.isin(plan["remain_index"], remain).all()
    # Distinct classes per sample.
    per_sample = plan["label"].reshape(-1, k)
    assert all(row.unique().numel() == k for row in per_sample)
