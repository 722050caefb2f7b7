"""The cost model: counted FLOPs against a hand count, the backbone structure of each method,
and the throughput's label (measured from a GPU bench file, else assumed)."""

from __future__ import annotations

import json

import pytest

from spreadcon.runs import cost

# A config small enough to count by hand: the linear encoder on MNIST's 1x28x28 images.
SMALL = {"encoder": "linear", "train_size": 512, "val_size": 256, "test_size": 256, "batch_size": 64,
         "views": 2, "epochs": 3, "probe": "adamw", "probe_epochs": 4}
D_IN, D_OUT = 1 * 28 * 28, 128
FWD = 2 * D_IN * D_OUT      # one matmul, 2 FLOPs per multiply-add (the bias is not counted)
TRAIN = FWD + 2 * D_IN * D_OUT  # + the weight gradient; the images need no gradient


def test_linear_encoder_counts_match_the_hand_count():
    assert cost.encoder_forward_flops("linear", (1, 28, 28)) == FWD
    assert cost.encoder_train_flops("linear", (1, 28, 28)) == TRAIN


def test_vit_training_count_is_the_package_counter():
    from spreadcon.models import vit_train_step_flops

    assert cost.encoder_train_flops("vit", (3, 32, 32)) * 256 == vit_train_step_flops(256, (3, 32, 32))
    # the generic meta-device counter agrees with it on the same pass
    assert cost._counted("vit", (3, 32, 32), True) == cost.encoder_train_flops("vit", (3, 32, 32))


def test_single_backbone_run_matches_the_hand_computation():
    c = cost.run_cost("mnist", "supcon", "smoke", SMALL)
    steps = 512 // 64
    per_epoch = steps * 64 * 2 * TRAIN + 256 * FWD      # training steps + the val check
    assert c.backbone_flops == (("supcon", 3 * per_epoch),)
    embed = (512 + 256 + 256) * FWD                      # train, val, test embedded once
    probes = 2 * (4 * 512 + 256 + 256) * FWD             # fine and coarse AdamW probes
    head = 256 * FWD                                     # the coarse head on the test images
    assert c.eval_flops == embed + probes + head
    assert c.total_flops == 3 * per_epoch + embed + probes + head
    # 1e13 FLOP/s for an hour is 3.6e16 FLOPs
    at = cost.Throughput(1e13, "x", "assumed", "test")
    assert cost.gpu_hours(3.6e16, at) == pytest.approx(1.0)


def test_controls_and_thanos_have_their_backbones():
    single = cost.run_cost("mnist", "supcon", "smoke", SMALL)
    pair = cost.run_cost("mnist", "supcon-pair", "smoke", SMALL)
    rand = cost.run_cost("mnist", "random-init", "smoke", SMALL)
    assert pair.train_flops == 2 * single.train_flops
    assert pair.eval_flops == 2 * (single.eval_flops - 256 * FWD)  # two encoders wide, no single coarse head
    assert rand.train_flops == 0 and rand.eval_flops == single.eval_flops - 256 * FWD
    # the supcon run of the same seed can stand in for one of the pair's backbones, never both
    assert pair.marginal_flops(["supcon"]) == pair.eval_flops + single.train_flops

    thanos = cost.run_cost("mnist", "thanos", "smoke", SMALL)
    spread = cost.run_cost("mnist", "spread", "smoke", SMALL)
    ae = cost.run_cost("mnist", "autoencoder", "smoke", SMALL)
    assert [b for b, _ in thanos.backbone_flops] == ["spread", "autoencoder"]
    assert thanos.train_flops == spread.train_flops + ae.train_flops
    assert ae.train_flops > spread.train_flops  # the decoder is counted
    assert thanos.marginal_flops(["spread", "autoencoder"]) == thanos.eval_flops
    assert thanos.marginal_flops(["spread"]) == thanos.eval_flops + ae.train_flops


def test_lbfgs_probe_and_robustness_cost_only_the_embeddings():
    lb = cost.run_cost("mnist", "supcon", "smoke", {**SMALL, "probe": "lbfgs"})
    assert lb.eval_flops == (512 + 256 + 256 + 256) * FWD
    rb = cost.run_cost("waterbirds", "random-init", "smoke", {**SMALL, "image_size": 28})
    c = 3 * 28 * 28
    assert rb.eval_flops == (512 + 256 + 256) * 2 * c * D_OUT


def test_unknown_names_raise():
    with pytest.raises(ValueError, match="no size known"):
        cost.run_cost("folder", "supcon", "smoke")
    with pytest.raises(ValueError, match="valid methods"):
        cost.run_cost("mnist", "byol", "smoke")


def _bench(path, device):
    path.write_text(json.dumps({"gpu": {"gpu_encoder_flops_per_epoch": 6e15, "gpu_epoch_s": 100.0,
                                        "gpu_device": device, "gpu_method": "spread", "gpu_preset": "paper"}}))
    return path


def test_throughput_is_measured_where_a_gpu_file_exists_else_assumed(tmp_path):
    assert cost.throughput(bench=tmp_path / "absent.json") is cost.ASSUMED["reference"]
    assert cost.throughput(bench=tmp_path / "absent.json").label == "assumed"
    h100 = _bench(tmp_path / "h100.json", "NVIDIA H100 80GB HBM3")
    got = cost.throughput(bench=h100)
    assert (got.label, got.flops_per_s, got.device) == ("measured", 6e13, "NVIDIA H100 80GB HBM3")
    assert "measured: 60 TFLOP/s on NVIDIA H100" in got.describe()
    assert cost.throughput("t4", bench=h100) is cost.ASSUMED["t4"]  # an H100 figure does not price a T4
    t4 = _bench(tmp_path / "t4.json", "Tesla T4")
    assert cost.throughput("t4", bench=t4).label == "measured"
    (tmp_path / "bad.json").write_text('{"gpu": {"gpu_epoch_s": null}}')  # a CPU-only bench: no figure
    assert cost.measured_throughput(tmp_path / "bad.json") is None
    with pytest.raises(ValueError, match="valid: reference, t4"):
        cost.throughput("v100")


def test_the_costs_the_presets_docstring_and_readme_quote_are_the_models():
    """The figures in spreadcon/presets.py and the README come from this model at the assumed throughputs."""
    import re
    from pathlib import Path

    from spreadcon import presets
    from spreadcon.runs import reproduce

    ref, t4 = cost.ASSUMED["reference"], cost.ASSUMED["t4"]
    paper = {m: cost.run_cost("cifar10", m, "paper") for m in ("spread", "autoencoder", "thanos")}
    assert round(paper["spread"].total_flops / 1e15) == 88 and round(paper["autoencoder"].total_flops / 1e15) == 391
    assert [round(cost.gpu_hours(paper[m].total_flops, ref), 1) for m in paper] == [0.5, 2.2, 2.7]
    assert round(cost.gpu_hours(paper["thanos"].eval_flops, ref), 2) == 0.05
    colab = {m: cost.run_cost("cifar10", m, "colab") for m in ("spread", "autoencoder", "thanos")}
    assert round(60 * cost.gpu_hours(colab["spread"].total_flops, t4)) == 31
    assert round(60 * cost.gpu_hours(colab["spread"].eval_flops, t4)) == 8
    assert round(cost.gpu_hours(colab["autoencoder"].total_flops, t4), 1) == 1.9
    assert round(60 * cost.gpu_hours(colab["thanos"].eval_flops, t4)) == 15
    doc = " ".join(presets.__doc__.split())
    for quoted in ("88 PFLOP, about 0.5 GPU-hours", "391 PFLOP", "about 2.2 hours", "about 2.7 hours",
                   "0.05 hours", "about 31 minutes", "of which 8 are the probe", "about 1.9 hours", "15 minutes"):
        assert quoted in doc, quoted

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    quoted = re.search(r"total: ([0-9.]+) GPU-hours for (\d+) runs .*?; ([0-9.]+) if each", readme)
    runs = [(d, m) for d in reproduce.PAPER_DATASETS for m in reproduce.PAPER_METHODS]
    costs = {dm: cost.run_cost(*dm, reproduce.PAPER_PRESET) for dm in runs}
    marginal = 3 * sum(c.eval_flops if m == "thanos" else c.total_flops for (_, m), c in costs.items())
    alone = 3 * sum(c.total_flops for c in costs.values())
    assert quoted.groups() == (f"{cost.gpu_hours(marginal, ref):.1f}", str(3 * len(runs)),
                               f"{cost.gpu_hours(alone, ref):.1f}")
