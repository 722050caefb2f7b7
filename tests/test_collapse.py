"""spreadcon.book.collapse: the cosines and probes chapters 1 and 2 follow, on
embeddings whose answers are known."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from spreadcon.book import collapse
from spreadcon.theory import model as theory


def _split(coarse, fine):
    return SimpleNamespace(coarse=torch.as_tensor(coarse), fine=torch.as_tensor(fine))


def test_collapsed_simplex_has_the_theorem_values():
    # Three classes, each one point of a regular simplex (cos -1/2), fine labels 0/1 inside each class.
    angles = torch.tensor([0.0, 2.0, 4.0]) * torch.pi / 3
    mu = torch.stack([angles.cos(), angles.sin()], dim=1)
    coarse = torch.arange(3).repeat_interleave(6)
    z = mu[coarse] * 3.0                           # the norm must not matter: cosines of unit vectors
    split = _split(coarse, torch.arange(18) % 2)
    m = collapse.embedding_metrics(z, split, z, split)
    assert m["within_train"] == pytest.approx(1.0) and m["within_test"] == pytest.approx(1.0)
    assert m["between_train"] == pytest.approx(-0.5) and m["between_test"] == pytest.approx(-0.5)
    assert m["coarse_acc"] == 1.0
    assert m["fine_acc"] == pytest.approx(0.5)     # collapse erased the fine label: chance within a class


def test_spread_classes_keep_the_fine_label():
    g = torch.Generator().manual_seed(0)
    fine = torch.arange(4).repeat(50)              # four digits, two per coarse class
    coarse = fine // 2
    centres = torch.eye(4) * 4.0
    z = centres[fine] + 0.3 * torch.randn(200, 4, generator=g)
    split = _split(coarse, fine)
    m = collapse.embedding_metrics(z, split, z, split)
    assert m["fine_acc"] == 1.0 and m["coarse_acc"] == 1.0
    rho, sigma = theory.class_cosines(z, coarse)
    assert m["within_train"] == pytest.approx(rho) and m["between_train"] == pytest.approx(sigma)
    assert m["within_train"] < 0.6                # the two digits of a class sit apart


def test_frozen_metrics_embeds_normalised_images():
    # An "encoder" that reads the first pixel: images of class c have value c + 1 there.
    images = torch.zeros(8, 1, 2, 2)
    coarse = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    images[:, 0, 0, 0] = coarse.float() + 1
    class Split(SimpleNamespace):
        def __len__(self):
            return len(self.images)

    split = Split(images=images, coarse=coarse, fine=torch.arange(8) % 2)
    ds = SimpleNamespace(splits={"train": split, "test": split})
    aug = SimpleNamespace(normalize=lambda x: x - 1.5)  # class 0 -> -0.5, class 1 -> +0.5
    encoder = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    with torch.no_grad():
        encoder[1].weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0.0, 0, 0, 0]]))
        encoder[1].bias.copy_(torch.tensor([0.0, 0.1]))
    m = collapse.frozen_metrics(encoder, ds, aug)
    assert m["coarse_acc"] == 1.0 and m["within_train"] == pytest.approx(1.0)
    # unit vectors (-0.5, 0.1) and (0.5, 0.1): cos = (-0.25 + 0.01) / 0.26
    assert m["between_test"] == pytest.approx(-0.24 / 0.26, abs=1e-5)


def test_metrics_markdown_rounds_and_leaves_missing_cells_empty():
    rows = [{"epoch": 0, "within_test": 0.71264, "fine_acc": 0.5},
            {"epoch": 1, "supcon_loss": 4.25, "within_test": 1.0, "fine_acc": 0.66666}]
    assert collapse.metrics_markdown(rows).splitlines() == [
        "| epoch | within test | fine acc | supcon loss |",
        "|---:|---:|---:|---:|",
        "| 0 | 0.713 | 0.5 |  |",
        "| 1 | 1 | 0.667 | 4.25 |",
    ]
    assert collapse.metrics_markdown(rows, digits=1).splitlines()[2] == "| 0 | 0.7 | 0.5 |  |"


def test_alpha_sweep_in_worker_processes_equals_chapter_2s_loop(data_root, one_thread):
    """Chapter 2 shares its MNIST runs among processes: each record must be exactly the serial cell's."""
    from spreadcon.data.augment import TwoViewAugment
    from spreadcon.presets import resolve
    from spreadcon.train.loop import train

    settings = {"train_size": 128, "val_size": 64, "test_size": 64, "epochs": 1, "temperature": 0.5, "lr": 3e-3}
    reference = {}
    for a in (0.0, 1.0):  # the chapter's first edition of the cell, one seed
        cfg = resolve("smoke", "mnist", {**settings, "alpha": a})
        ds = collapse.mnist_subset(cfg, str(data_root))
        result = train("spread", ds, cfg, seed=1, progress=False)
        reference[1, a] = collapse.frozen_metrics(result.model.encoder, ds, TwoViewAugment.for_dataset(ds))
    assert reference[1, 0.0] != reference[1, 1.0]
    for workers in (1, 2):
        assert collapse.alpha_sweep([1], [0.0, 1.0], settings, str(data_root), workers=workers) == reference
