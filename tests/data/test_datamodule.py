"""ForgetRemainDataModule: splits, the saved plan, on-the-fly mixing and augmentation."""

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from natmu_lightning.backbones import SmallCNN
from natmu_lightning.data import ForgetRemainDataModule, IndexForget, RandomForget, SyntheticImages
from natmu_lightning.data.streams import ForgetThenRemainLayout, PairedLayout
from natmu_lightning.methods import ClassifierModule
from natmu_lightning.natmu import hybrids
from natmu_lightning.natmu.hybrids import HybridOptions
from tests.plan_checks import check_plan
from tests.tiny_runs import setup_fit


def attach(dm, tmp_path, module=None, max_epochs=2):
    """Give ``dm`` a trainer that holds ``module`` (as Lightning does before setup)."""
    module = module or ClassifierModule(SmallCNN(num_classes=10))
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        default_root_dir=tmp_path,
        max_epochs=max_epochs,
        enable_progress_bar=False,
    )
    trainer.strategy.connect(module)
    dm.trainer = trainer
    return trainer


def hybrid_dm(tmp_path, seed: int = 0, **natmu):
    torch.manual_seed(0)
    dm = ForgetRemainDataModule(
        stream="hybrid", batch_size=64, crop_padding=1, horizontal_flip=True, seed=seed, natmu=natmu
    )
    attach(dm, tmp_path)
    setup_fit(dm)
    return dm


def test_public_attributes_and_saved_plan(tmp_path):
    dm = hybrid_dm(tmp_path, delta=-0.19)
    f, plan = dm.forget_indices, dm.hybrid_plan
    assert f.dtype == torch.int64 and f.ndim == 1
    assert dm.train_targets.numel() == 1257 and dm.train_targets.dtype == torch.int64
    check_plan(plan, f, dm.train_targets, None, dm.remain_indices, k=4)
    saved = np.load(tmp_path / "hybrid_plan.npz")
    assert all(np.array_equal(saved[key], plan[key].numpy()) for key in plan)
    saved_forget = np.load(tmp_path / "forget_indices.npy")
    assert np.array_equal(saved_forget, f.numpy())
    # The saved forget set resolves to exactly the same set when passed back in.
    again = ForgetRemainDataModule(forget=IndexForget(str(tmp_path / "forget_indices.npy")), stream="remain")
    again.setup("validate")
    assert torch.equal(again.forget_indices, f)


def test_a_plan_drawn_for_one_fit_stays_out_of_a_later_fit_of_another_stream(tmp_path):
    """One datamodule, a NatMU fit's setup then a fine-tuning one's: the second trains on the
    remaining samples only, and its checkpoint state holds no plan."""
    from natmu_lightning.data import TrainingNeeds

    torch.manual_seed(0)
    dm = ForgetRemainDataModule(batch_size=64)
    attach(dm, tmp_path)
    dm.setup("fit")
    dm.prepare_for("fit", TrainingNeeds("hybrid"), SmallCNN(num_classes=10))
    assert len(dm.train_dataloader().dataset) == dm.remain_indices.numel() + 4 * dm.forget_indices.numel()
    dm.setup("fit")
    dm.prepare_for("fit", TrainingNeeds("remain"), None)
    assert len(dm.train_dataloader().dataset) == dm.remain_indices.numel()
    state = dm.state_dict()
    assert state["stream"] == "remain" and "hybrid_plan" not in state


def test_a_checkpoint_state_without_a_stream_is_measured_on_another_forget_set_with_a_warning():
    """Checkpoints written before the datamodule recorded its stream may be originals: warned, not refused."""
    from natmu_lightning.data.resolution import check_saved_state

    saved, other = torch.tensor([1, 2, 3]), torch.tensor([1, 2, 4])
    with pytest.warns(UserWarning, match="records no training stream"):
        check_saved_state({"forget_indices": saved, "seed": 5}, other, seed=0, fitting=False)
    check_saved_state({"forget_indices": saved, "stream": "full"}, other, seed=0, fitting=False)
    with pytest.raises(
        ValueError, match="different forget set \\(3 samples\\) than this configuration resolves \\(3\\)$"
    ):
        check_saved_state({"forget_indices": saved, "stream": "full"}, other, seed=0, fitting=True)
    # a further request's result, measured on all it has forgotten (benchmarks/sequential.py)
    further = {"forget_indices": torch.tensor([4]), "already_forgotten": torch.tensor([1, 2]), "stream": "hybrid"}
    check_saved_state(further, other, seed=0, fitting=False)
    with pytest.raises(ValueError, match="on the 'hybrid' stream"):
        check_saved_state(further, saved, seed=0, fitting=False)


def test_stream_sizes(tmp_path):
    dm = hybrid_dm(tmp_path)
    n_remain, n_forget = dm.remain_indices.numel(), dm.forget_indices.numel()
    assert len(dm.train_dataloader().dataset) == n_remain + 4 * n_forget
    for stream, expected in (("remain", n_remain), ("full", n_remain + n_forget)):
        other = ForgetRemainDataModule(stream=stream)
        other.setup("fit")
        indices = torch.cat([b["index"] for b in other.train_dataloader()])
        assert indices.numel() == expected
        if stream == "remain":
            assert not torch.isin(indices, other.forget_indices).any()


def test_hybrids_exact_and_unaugmented_remaining_augmented(tmp_path):
    dm = hybrid_dm(tmp_path, delta=-0.19)
    masks = hybrids.gradual_masks(8, 8, -0.19)
    seen_hybrid = seen_changed_plain = 0
    for raw in dm.train_dataloader():
        out = dm.on_after_batch_transfer(dict(raw), 0)
        assert out["image"].dtype == torch.float32 and 0 <= out["image"].min() and out["image"].max() <= 1
        is_hybrid = raw["mask_id"] >= 0
        expected = hybrids.mix(raw["image"][is_hybrid], raw["partner"], masks[raw["mask_id"][is_hybrid]].unsqueeze(1))
        assert torch.equal((out["image"][is_hybrid] * 255).round().to(torch.uint8), expected)
        plain = ~is_hybrid
        changed = ((out["image"][plain] * 255).round().to(torch.uint8) != raw["image"][plain]).flatten(1).any(1)
        seen_hybrid += int(is_hybrid.sum())
        seen_changed_plain += int(changed.sum())
        assert torch.equal(out["target"], raw["target"])
    assert seen_hybrid == dm.hybrid_plan["label"].numel()
    assert seen_changed_plain > 0.5 * dm.remain_indices.numel()


def test_batches_carry_partner_images_only_for_their_hybrid_rows(tmp_path):
    dm = hybrid_dm(tmp_path)
    stream = dm.train_dataloader().dataset
    for raw in dm.train_dataloader():
        is_hybrid = raw["mask_id"] >= 0
        assert raw["partner"].shape == (int(is_hybrid.sum()), *raw["image"].shape[1:])
    first_hybrid = len(stream) - dm.hybrid_plan["label"].numel()
    row = stream[first_hybrid]
    assert torch.equal(row["partner"], stream.images[dm.hybrid_plan["remain_index"][0]])
    assert torch.equal(stream[0]["partner"], stream[0]["image"])  # a plain row's partner is itself
    remain = ForgetRemainDataModule(stream="remain")
    remain.setup("fit")
    assert all(batch["partner"].numel() == 0 for batch in remain.train_dataloader())


def test_no_augmentation_when_disabled(tmp_path):
    dm = ForgetRemainDataModule(stream="remain", crop_padding=0, horizontal_flip=False)
    attach(dm, tmp_path)
    dm.setup("fit")
    raw = next(iter(dm.train_dataloader()))
    out = dm.on_after_batch_transfer(dict(raw), 0)
    assert torch.equal((out["image"] * 255).round().to(torch.uint8), raw["image"])


def test_plan_uses_model_ranking(tmp_path):
    # A model that always prefers higher class ids: class 9 is first unless it is the label.
    class Ranker(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dummy = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return torch.arange(10, dtype=torch.float32).expand(x.shape[0], 10) + 0 * self.dummy

    dm = ForgetRemainDataModule(
        forget=RandomForget(0.02), stream="hybrid", natmu={"k": 2}
    )  # few enough that no class runs out
    attach(dm, tmp_path, module=ClassifierModule(Ranker()))
    setup_fit(dm)
    labels = dm.hybrid_plan["label"].reshape(-1, 2)
    own = dm.train_targets[dm.forget_indices]
    first = torch.where(own == 9, torch.tensor(8), torch.tensor(9))
    assert torch.equal(labels[:, 0], first)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"natmu": {"delta": 1.5}}, "delta"),
        ({"natmu": {"delta": [0.0, -0.2]}}, "per-epoch δ lists were removed"),
        ({"natmu": {"delta_end": -0.2}}, "delta_end and natmu.redraw_plan_every_epoch were removed"),
        ({"natmu": {"redraw_plan_every_epoch": True}}, "redraw_plan_every_epoch were removed"),
        ({"natmu": {"k": 5}}, "k must"),
        ({"natmu": {"mix": 0.5}}, "mix"),
        ({"batch_size": 0}, "batch_size"),
        ({"stream": "everything"}, "stream"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ForgetRemainDataModule(**kwargs)


def test_k_larger_than_other_classes(tmp_path):
    dm = ForgetRemainDataModule(
        source=SyntheticImages(num_classes=3, channels=1, height=8, width=8), stream="hybrid", natmu={"k": 3}
    )
    attach(dm, tmp_path, module=ClassifierModule(SmallCNN(num_classes=3)))
    with pytest.raises(ValueError, match="k=3"):
        setup_fit(dm)


def test_options_saved_by_0_2_0_still_load():
    """Configs written by 0.2.0 hold the removed options at their defaults: they still load."""
    options = HybridOptions.read({"k": 4, "delta": -0.19, "delta_end": None, "redraw_plan_every_epoch": False})
    assert options == HybridOptions(delta=-0.19)


def test_classwise_evaluation_splits(tmp_path):
    from natmu_lightning.data import ClassForget

    dm = ForgetRemainDataModule(forget=ClassForget([2]), stream="remain")
    dm.setup("fit")
    splits = dm.evaluation_splits()
    assert set(splits) == {"forget", "remain", "test", "forget_test"}
    assert torch.all(splits["forget"][1] == 2) and torch.all(splits["forget_test"][1] == 2)
    assert not torch.any(splits["test"][1] == 2) and not torch.any(splits["remain"][1] == 2)


def test_seed_determines_everything(tmp_path):
    a = hybrid_dm(tmp_path / "a", seed=3)
    b = hybrid_dm(tmp_path / "b", seed=3)
    assert torch.equal(a.forget_indices, b.forget_indices)
    assert all(torch.equal(a.hybrid_plan[k], b.hybrid_plan[k]) for k in a.hybrid_plan)


def test_forget_and_both_streams_flag_forgetting_samples():
    dm = ForgetRemainDataModule(stream="both")
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    index = torch.cat([b["index"] for b in batches])
    flagged = torch.cat([b["is_forget"] for b in batches])
    assert index.numel() == dm.train_targets.numel()
    assert torch.equal(flagged, torch.isin(index, dm.forget_indices))
    only = ForgetRemainDataModule(stream="forget")
    only.setup("fit")
    index = torch.cat([b["index"] for b in only.train_dataloader()])
    assert torch.equal(index.sort().values, only.forget_indices)


def test_batch_layouts_cover_each_set_once_per_pass_and_split_phases_across_ranks():
    scrub = ForgetThenRemainLayout(
        num_remain=10, num_forget=5, batch_size=4, forget_batch_size=2, seed=1, max_phase_epochs=1
    )
    phases = scrub.global_batches(0)
    forget, remain = ([rows for rows, _ in phase] for phase in phases)
    assert [len(rows) for rows in forget] == [2, 2, 1] and [len(rows) for rows in remain] == [4, 4, 2]
    assert sorted(torch.cat(forget).tolist()) == list(range(10, 15)) and sorted(torch.cat(remain).tolist()) == list(
        range(10)
    )
    assert {extra["phase"] for _, extra in phases[0]} == {"forget"} and {extra["phase"] for _, extra in phases[1]} == {
        "remain"
    }
    assert scrub.global_batches(1)[0] == [] and not torch.equal(remain[0], scrub.global_batches(1)[1][0][0])
    # Two ranks: each phase padded to an even count with its own first batch, then split.
    ranks = [scrub.batches(0, rank, 2) for rank in (0, 1)]
    assert [[extra["phase"] for _, extra in batches] for batches in ranks] == [["forget"] * 2 + ["remain"] * 2] * 2
    assert torch.equal(ranks[1][1][0], forget[0]) and torch.equal(ranks[1][3][0], remain[0])  # the padding

    paired = PairedLayout(num_remain=10, num_forget=3, batch_size=3, forget_batch_size=2, seed=1)
    [batches] = paired.global_batches(0)
    assert [extra["num_remain"] for _, extra in batches] == [3, 3, 3, 1]
    forget_parts = [rows[extra["num_remain"] :] for rows, extra in batches]
    assert [len(rows) for rows in forget_parts] == [2, 1, 2, 1]  # itertools.cycle over the epoch's 2 forget batches
    assert torch.equal(forget_parts[0], forget_parts[2]) and torch.equal(forget_parts[1], forget_parts[3])
    with pytest.raises(ValueError, match="at least one forgetting sample"):
        PairedLayout(num_remain=4, num_forget=0, batch_size=2, forget_batch_size=2, seed=0).global_batches(0)


def test_layout_streams_reach_the_module_as_whole_batches(tmp_path):
    dm = ForgetRemainDataModule(stream="paired", batch_size=100)
    attach(dm, tmp_path)
    setup_fit(dm)
    assert dm.trainer.reload_dataloaders_every_n_epochs == 1
    batches = [dm.on_after_batch_transfer(b, 0) for b in dm.train_dataloader()]
    assert len(batches) == 12 and all(b["image"].dtype == torch.float32 for b in batches)
    for batch in batches:
        n = batch["num_remain"]
        assert not batch["is_forget"][:n].any() and batch["is_forget"][n:].all()


def test_shuffle_and_augmentation_depend_only_on_seed_and_epoch(tmp_path):
    def epoch_batches(num_workers, epoch):
        dm = ForgetRemainDataModule(stream="remain", crop_padding=1, num_workers=num_workers, batch_size=256)
        attach(dm, tmp_path)
        setup_fit(dm)
        dm.trainer.fit_loop.epoch_progress.current.completed = epoch
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        return [dm.on_after_batch_transfer(b, 0)["image"] for b in loader]

    first, with_workers = epoch_batches(0, 1), epoch_batches(2, 1)
    assert len(first) == len(with_workers) > 1
    assert all(torch.equal(a, b) for a, b in zip(first, with_workers))
    assert not torch.equal(first[0], epoch_batches(0, 2)[0])


def test_hardest_request_uses_the_attached_original_model(tmp_path):
    from natmu_lightning.data import HardestForget
    from natmu_lightning.predict import predict_logits

    torch.manual_seed(0)
    untrained = ClassifierModule(SmallCNN(num_classes=10))
    dm = ForgetRemainDataModule(forget=HardestForget(0.05), stream="remain")
    attach(dm, tmp_path, module=untrained)
    with pytest.raises(ValueError, match="ClassifierModule being set up has no original_ckpt"):
        setup_fit(dm)
    assert dm.forget_indices is None  # nothing resolved, nothing saved

    torch.save(SmallCNN(num_classes=10).state_dict(), tmp_path / "original.pt")
    module = ClassifierModule(SmallCNN(num_classes=10), original_ckpt=str(tmp_path / "original.pt"))
    attach(dm, tmp_path, module=module)
    setup_fit(dm)
    data = dm.data.train
    losses = torch.nn.functional.cross_entropy(predict_logits(module, data.images), data.targets, reduction="none")
    expected = torch.sort(-losses.double(), stable=True).indices[: round(0.05 * losses.numel())].sort().values
    assert torch.equal(dm.forget_indices, expected)


def test_the_data_never_looks_the_module_up():
    """One direction: methods hand the data their TrainingNeeds (and the model); nothing under
    natmu_lightning/data reads a trainer's module or its hyperparameters."""
    import re
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "natmu_lightning" / "data"
    found = [
        f"{path.name}:{number}"
        for path in sorted(folder.rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"lightning_module|hparams", line)
    ]
    assert found == []


def test_methods_declare_what_the_data_reads_from_them(tmp_path):
    from natmu_lightning.data import TrainingNeeds
    from natmu_lightning.methods import NegGradPlusModule, SCRUBModule

    path = tmp_path / "original.pt"
    torch.save(SmallCNN(num_classes=10).state_dict(), path)
    assert ClassifierModule(SmallCNN(), stream="remain").training_needs() == TrainingNeeds("remain")
    neggrad = NegGradPlusModule(SmallCNN(), original_ckpt=str(path), forget_batch_size=16).training_needs()
    assert neggrad == TrainingNeeds("paired", str(path), unlearns=True, forget_batch_size=16)
    scrub = SCRUBModule(SmallCNN(), original_ckpt=str(path), forget_batch_size=8, max_phase_epochs=1).training_needs()
    expected = TrainingNeeds("forget_then_remain", str(path), unlearns=True, forget_batch_size=8, max_phase_epochs=1)
    assert scrub == expected
    dm = ForgetRemainDataModule(stream="paired", batch_size=100)
    attach(dm, tmp_path)
    dm.setup("fit")
    with pytest.warns(UserWarning, match="data.stream 'paired' overrides the method's 'forget_then_remain' stream"):
        dm.prepare_for("fit", scrub, None)  # the needs size the layout; the constructor's stream wins, said
    assert dm.stream == "paired" and dm._layout().forget_batch_size == 8


def test_a_hybrid_stream_without_a_model_says_how_to_hand_one_over(tmp_path):
    dm = ForgetRemainDataModule(stream="hybrid")
    dm.setup("fit")
    with pytest.raises(ValueError, match="planning hybrids needs the original model.*prepare_for"):
        dm.train_dataloader()
    nothing = ForgetRemainDataModule()
    nothing.setup("fit")
    with pytest.raises(ValueError, match="cannot tell which training stream"):
        nothing.train_dataloader()
