"""``python -m spreadcon bench``: the CONTRACT §5 keys, the loop baseline, the fast loss path.

No timing is asserted: the numbers depend on the machine and its load. What is
asserted is what the numbers mean: the CLI prints one JSON object with the
keys and types the contract names, the per-anchor loop computes the same loss
as ``SpreadLoss(reference_quirks=True)`` (so the speed-up compares like with
like), and the fused fast path of :mod:`spreadcon.losses._kernel` gives the same
values and gradients as its masked-logsumexp fallback.
"""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spreadcon import bench
from spreadcon.losses import _kernel as K
from spreadcon.losses import contrastive as L

REPO = Path(__file__).resolve().parents[1]


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def test_cli_quick_json_has_contract_keys(tmp_path):
    out = tmp_path / "bench.json"
    r = subprocess.run(
        [sys.executable, "-m", "spreadcon", "bench", "--json", "--quick", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(r.stdout)  # stdout is one JSON object and nothing else
    assert json.loads(out.read_text()) == result  # --out writes the same object
    for key in ("loss_speedup_vs_loop_b512", "loss_vs_pml_supcon_b512", "train_step_flops_fraction_cpu",
                "augment_speedup_vs_pil"):  # fmt: skip
        value = result[key]
        assert value is None and isinstance(result.get(f"{key}_reason"), str) or _positive(value), (key, value)
    assert _positive(result["loss_speedup_vs_loop_b512"])  # no optional dependency behind this one
    assert _positive(result["train_step_flops_fraction_cpu"]) and result["train_step_flops_fraction_cpu"] < 1.5
    for key in ("train_step_bf16_flops_fraction_cpu", "cpu_preset_step_flops_fraction_cpu"):  # each against its dtype's peak
        assert _positive(result[key]) and result[key] < 1.5, (key, result[key])
    assert result["cpu_preset_step_precision"] in ("fp32", "bf16") and result["cpu_preset_step_encoder"] == "cnn"
    for key in ("cpu_preset_step_s", "cpu_preset_step_images_per_s", "cpu_preset_matmul_flops_per_s",
                "cpu_preset_step_flops", "train_step_bf16_s", "matmul_bf16_flops_per_s",
                "train_step_dropout_speedup", "train_step_bf16_dropout_speedup",
                "train_step_bf16_torch_dropout_s", "train_step_bf16_torch_dropout_flops_fraction_cpu"):  # fmt: skip
        assert _positive(result[key]), (key, result[key])
    assert result["cpu_preset_step_batch"] == bench.QUICK["cpu_batch"] and result["cpu_preset_step_views"] == 2
    if result["cpu_preset_step_precision"] == "fp32":  # nothing to compare against
        assert result["cpu_preset_step_fp32_s"] is None and result["cpu_preset_step_speedup_vs_fp32"] is None
    else:  # the float32 step timed in the same round-robin
        speedup = result["cpu_preset_step_fp32_s"] / result["cpu_preset_step_s"]
        assert _positive(speedup) and result["cpu_preset_step_speedup_vs_fp32"] == pytest.approx(speedup)
    m = result["machine"]
    assert isinstance(m["cpu"], str) and m["cpu"]
    assert isinstance(m["torch_threads"], int) and isinstance(m["bench_threads"], int)
    assert m["torch_version"] == torch.__version__
    for k in ("load_avg_1m_start", "load_avg_1m_end"):
        assert m[k] is None or isinstance(m[k], float)
    assert _positive(result["train_step_images_per_s"]) and _positive(result["train_step_flops"])
    assert _positive(result["chunked"]["chunked_peak_mib"]) or result["chunked"]["chunked_peak_mib"] is None
    row = result["losses"]["sizes"]["512"]
    assert row["loop_quirks_scale"] == 512 / row["loop_quirks_anchors_timed"]
    if not torch.cuda.is_available():  # the GPU section says why it has no numbers
        gpu = result["gpu"]
        assert gpu["gpu_epoch_s"] is None and "CUDA" in gpu["gpu_reason"] and "--device cuda" in gpu["gpu_command"]


def test_cpu_preset_step_counts_the_cnn_flops_and_trains_in_the_auto_precision():
    """The cpu preset's benchmarked step: its FLOPs are the small CNN's convolutions and linear maps written
    out (backward twice the forward, no input gradient for the first convolution), its precision is what
    amp=auto picks here, and a step is the training path's (it returns the method's finite loss terms)."""
    from spreadcon.presets import resolve
    from spreadcon.train.loop import precision

    batch = 4
    step, info = bench.cpu_preset_step(batch)
    layers = [(3, 32, 32), (32, 64, 16), (64, 128, 8), (128, 128, 4)]  # (in, out channels, output side)
    convs = [2 * cout * side * side * cin * 9 for cin, cout, side in layers]
    forward = sum(convs) + 2 * 128 * 128 + 2 * 128 * 2  # + the CNN's linear map and the 2-class coarse head
    assert info["flops"] == 2 * batch * (3 * forward - convs[0])
    assert info["precision"] == precision(resolve("cpu", "cifar10"), torch.device("cpu"))
    terms = step()
    assert terms.shape == (3,) and torch.isfinite(terms).all()  # spread's terms (ce, spread), then the total


def test_loop_baseline_computes_the_reference_quirks_loss():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(12, 3, 8, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, 3, (12,), generator=g)
    loop = bench.official_loop_spread(z, y, 0.3, 0.5)
    ours = L.SpreadLoss(alpha=0.3, temperature=0.5, reference_quirks=True)(z, y)
    assert torch.allclose(loop, ours, rtol=1e-12, atol=1e-12)
    assert torch.equal(bench.official_loop_spread(z, y, 0.3, 0.5, anchors=12), loop)  # all anchors: the same


@pytest.mark.parametrize("anchors,denominator,clamp,norm", list(itertools.product(
    ["all", "cross_view"], ["all", "one_positive"], [None, 0.8], ["row", "broadcast"])))  # fmt: skip
def test_fused_path_matches_logsumexp_path(monkeypatch, anchors, denominator, clamp, norm):
    g = torch.Generator().manual_seed(3)
    z = torch.randn(9, 3, 6, generator=g, dtype=torch.float64) * (0.5 + torch.rand(9, 3, 1, generator=g))
    y = torch.tensor([0, 0, 1, 1, 1, 2, 0, 1, 3])  # class 3 has one sample: no positive across samples
    results = []
    for fused in (True, False):
        monkeypatch.setattr(K, "_fused_ok", lambda *a, fused=fused: fused)
        for alpha, chunk in ((0.0, None), (0.4, None), (1.0, 4)):
            t = z.clone().requires_grad_(True)
            loss = L.spread_loss(t, y, alpha, 0.3, clamp=clamp, anchors=anchors, denominator=denominator,
                                 norm=norm, chunk_size=chunk)  # fmt: skip
            loss.backward()
            results.append((loss.detach(), t.grad))
    for (a, ga), (b, gb) in zip(results[:3], results[3:]):
        assert torch.allclose(a, b, rtol=1e-11, atol=1e-11)
        assert torch.allclose(ga, gb, rtol=1e-9, atol=1e-11)


def test_small_temperature_uses_the_exact_path_and_stays_finite():
    g = torch.Generator().manual_seed(4)
    z = torch.randn(64, 2, 16, generator=g)
    y = torch.randint(0, 3, (64,), generator=g)
    assert not K._fused_ok(torch.ones(1), 1 / 0.01, "row", torch.float32)  # logits span 200 > float32 exp range
    assert K._fused_ok(torch.ones(1), 1 / 0.5, "row", torch.float32)
    for quirks in (False, True):
        t = z.clone().requires_grad_(True)
        loss = L.spread_loss(t, y, 0.5, 0.01, reference_quirks=quirks)
        loss.backward()
        ref = L.spread_loss(z.double(), y, 0.5, 0.01, reference_quirks=quirks)
        assert torch.isfinite(t.grad).all() and abs(float(loss.detach()) - float(ref)) < 1e-4 * abs(float(ref))


def test_write_json_atomic_leaves_no_temp_file(tmp_path):
    path = bench.write_json_atomic({"a": 1}, tmp_path / "sub" / "x.json")
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="repeats"):
        bench.interleaved_times({"f": lambda: None}, repeats=0)
    with pytest.raises(ValueError, match="unknown bench settings"):
        bench.run_all(quick=True, nonsense=1)
