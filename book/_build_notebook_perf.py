"""Write book/appendix_performance.ipynb (without outputs) with nbformat.

Run from the repository root:  .venv/bin/python book/_build_notebook_perf.py
The notebook is generated, so edit this file, not the .ipynb file.
"""

from __future__ import annotations

from _nb import code, md, notebook, write  # book/_nb.py: the shared cell and notebook helpers

CELLS = [
    md("""
# Performance

The official code loops over anchors in Python inside its loss and feeds the
model through per-image PIL transforms. This appendix measures how much faster
`spreadcon` computes the same things, and how close a training step comes to
what the hardware can do. Every number below comes from
`python -m spreadcon bench` (module `spreadcon.bench`): the build runs a *quick*
version of it, and the newest committed full run, `results/bench/cpu-<commit>.json`
(each full run is a new file, named for the commit it measured), is read with the
machine it ran on.

| figure | target (issue 7) |
|---|---|
| loss (forward + backward) vs the per-anchor loop at B = 512 | at least 50x faster |
| our SupCon vs pytorch-metric-learning's `SupConLoss` | at most 1.0 of its time |
| ViT training step on CPU, as a fraction of this machine's float32 matmul FLOP/s | at least 40% |
| batched augmentation vs per-image PIL torchvision | at least 5x |
| one `paper` run (600 epochs, CIFAR-10) on one H200, projected | under 20 minutes |

How to read the numbers. Each time is the median of repeated runs after a
warm-up; where two things are compared they are timed round-robin, so that load
from other processes hits both alike. The CPU sections run on one thread by
default (`--threads`), because on a shared CPU multi-threaded timings of small
kernels mostly measure the other processes. The 1-minute load average at the
start and end of the run is recorded with the machine, so you can judge the
noise yourself.
"""),
    code('''
QUICK = True               # True: the quick bench (about a minute on 2 CPU cores); False: the full one (minutes)
SIZES = (64, 128, 256, 512)  # batch sizes B of the loss figures (V = 2 views, D = 128)
THREADS = 1                # torch threads for the CPU sections; None = torch default
DEVICE = "cpu"             # "cuda" adds the GPU section (epoch time of the paper preset)
FULL_RUN = None            # a full run file relative to results/; None for the newest results/bench/cpu-COMMIT.json
# A full run is made on a clean checkout with
#   python -m spreadcon bench --json --out results/bench/cpu-COMMIT.json
# and the GPU numbers come from
#   python -m spreadcon bench --json --device cuda --out results/bench/gpu.json
''', "parameters"),
    code('''
import json

import matplotlib.pyplot as plt
import torch
from myst_nb import glue

import subprocess

from spreadcon.bench import run_all
from spreadcon.report import default_results_dir


def commit_time(path):
    """When the run's commit was made (git), to order the runs; 0 where git cannot tell."""
    commit = str(json.loads(path.read_text()).get("git_commit", "")).split("-")[0]
    try:
        return int(subprocess.run(["git", "show", "-s", "--format=%ct", commit], capture_output=True, text=True,
                                  cwd=path.parent, check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError, ValueError):
        return 0


live = run_all(quick=QUICK, device=DEVICE, threads=THREADS, sizes=tuple(SIZES))
archive = sorted((default_results_dir() / "bench").glob("cpu-*.json"), key=lambda p: (commit_time(p), p.name))
full_path = default_results_dir() / FULL_RUN if FULL_RUN else (archive[-1] if archive else None)
full = json.loads(full_path.read_text()) if full_path is not None and full_path.exists() else None
m = live["machine"]
print(f"this build: {m['cpu']}, {m['cpu_cores']} cores, {m['bench_threads']} torch thread(s), torch {m['torch_version']}, "
      f"load average {m['load_avg_1m_start']} -> {m['load_avg_1m_end']}, {live['wall_time_s']:.0f} s")
'''),
    md("""
## The loss

`SpreadLoss(reference_quirks=True)` (the official computation, artefacts
included, CONTRACT §1) against a per-anchor Python loop with the official
code's algorithmic shape (`spreadcon.bench.official_loop_spread`; a test checks
that it computes the same value), and our SupCon against
pytorch-metric-learning's on the same embeddings. The loop costs about the same
per anchor at a given B, so at large B it is timed on its first anchors and
scaled; the dashed part of its line is scaled, not measured.
"""),
    code('''
def loss_rows(result):
    sizes = sorted(int(b) for b in result["losses"]["sizes"])
    return sizes, [result["losses"]["sizes"][str(b)] for b in sizes]


CASES = [("spread_quirks", "ours, reference quirks"), ("supcon", "ours, SupCon"),
         ("pml_supcon", "pytorch-metric-learning SupCon"), ("loop_quirks", "per-anchor loop (official shape)")]


def plot_losses(result, title):
    sizes, rows = loss_rows(result)
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in CASES:
        if f"{key}_s" not in rows[0]:
            continue
        t = [1e3 * r[f"{key}_s"] for r in rows]
        mem = [r.get(f"{key}_peak_mib") for r in rows]
        if key == "loop_quirks":
            full_b = [b for b, r in zip(sizes, rows) if r["loop_quirks_scale"] == 1]
            ax_t.plot(sizes, t, "k--", label=label + " (dashed: scaled)")
            ax_t.plot(full_b, t[: len(full_b)], "k-o")
        else:
            ax_t.plot(sizes, t, "-o", label=label)
        if all(v is not None for v in mem):
            ax_m.plot(sizes, mem, "--" if key == "loop_quirks" else "-o", label=label)
    for ax in (ax_t, ax_m):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size B (V = 2 views, D = 128)")
    ax_t.set_ylabel("forward + backward time (ms)")
    ax_m.set_ylabel("peak memory allocated by torch (MiB)")
    ax_t.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    plt.show()


speedup, pml = live["loss_speedup_vs_loop_b512"], live["loss_vs_pml_supcon_b512"]
glue("perf_live_speedup", f"{speedup:.0f}x", display=False)
glue("perf_live_pml", "n/a" if pml is None else f"{pml:.2f}", display=False)
plot_losses(live, f"This build (quick): at B = 512 ours is {speedup:.0f}x faster than the loop"
                  + ("" if pml is None else f" and takes {pml:.2f} of PML's SupCon time"))
''', "hide-input"),
    md("""
In this build, at B = 512 the vectorised loss is {glue:text}`perf_live_speedup`
faster than the loop, and our SupCon takes {glue:text}`perf_live_pml` of
pytorch-metric-learning's time (below 1 is faster).

**Where the time goes.** After the similarity matmul the loss needs, per
anchor, a log-sum-exp over all candidates (Khosla's SupCon), over the
same-class candidates (cNCE) and, for the official "one positive plus the
negatives" denominator, `log(exp s_p + sum_n exp s_n)` for every positive.
Written with `torch.logsumexp` over masked copies of the logits, every mask
costs an `exp` in the forward pass and another in the backward pass, autograd
keeps every intermediate, and on this CPU comparisons and boolean masks cost
5 to 10 times a float pass (and `exp` of the `finfo.min` mask entries 20
times). `spreadcon.losses` instead computes `E = exp(S)` once per block in a
custom autograd function (with unit-norm embeddings every logit lies in
`[-1/tau, 1/tau]`, so no max needs subtracting), gets the row sums from `E`
directly or from one product with the one-hot class matrix, and gathers each
anchor's same-class columns into a narrow `(M, P)` block (`P` is the largest
class, about `1/n_classes` of the columns) for everything about the positives.
Its backward pass is written out: `dS = E * u[row]` on every column plus the
positives' terms added back at their columns, so the whole block is touched by
one `exp`, a few sums, one multiply and the two matmuls of the backward pass.
When the logits could leave the range of `exp` (temperature below about 0.026
in float32, or extreme norm ratios with the official norm artefact), it falls
back to exact masked log-sum-exps. Tests check the two paths against each other
and against double loops written from the equations.

**Very large batches.** With `chunk_size`, anchors are processed in blocks that
are recomputed in the backward pass, so memory grows like `chunk_size x B V`
instead of `(B V)^2`:
"""),
    code('''
NL = chr(10)


def chunk_line(result, name):
    c = result["chunked"]
    return (f"{name}: B*V = {c['chunked_bv']}, chunk {c['chunked_chunk_size']}: {c['chunked_s']:.2f} s forward + backward, "
            f"peak {c['chunked_peak_mib']:.0f} MiB;" + NL + f"  one unchunked {c['chunked_bv']}^2 float32 logit matrix alone is "
            f"{c['unchunked_logits_mib']:.0f} MiB")


print(chunk_line(live, "this build"))
if full is not None:
    print(chunk_line(full, "full run"))
''', "hide-input"),
    md("""
## A training step of the paper's ViT on CPU

One step of the paper's ViT (7 blocks, width 256, 4x4 patches on 32x32 images)
with `L_spread` and AdamW, in float32 without autocast. Its FLOPs are counted
with `torch.utils.flop_counter` (matmuls, convolutions and attention; the loss
and the optimiser are a rounding error), and its achieved FLOP/s is divided by
this machine's float32 matmul FLOP/s, measured with a large sgemm timed
round-robin with the step. The paper's batch is 128 images x 2 views; the quick
bench uses a few images, which lowers the fraction.
"""),
    code('''
def vit_bars(results):
    fig, ax = plt.subplots(figsize=(7, 3.2))
    names, achieved, peak = [], [], []
    for name, r in results:
        if r.get("train_step_flops_fraction_cpu") is None:
            continue
        names.append(f"{name}\\n(batch {r['train_step_batch']} x {r['train_step_views']} views)")
        achieved.append(r["train_step_achieved_flops_per_s"] / 1e9)
        peak.append(r["matmul_flops_per_s"] / 1e9)
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], peak, 0.4, label="float32 sgemm")
    ax.bar([i + 0.2 for i in x], achieved, 0.4, label="ViT training step")
    for i, (a, p) in enumerate(zip(achieved, peak)):
        ax.text(i + 0.2, a, f"{100 * a / p:.0f}%", ha="center", va="bottom")
    ax.set_xticks(list(x), names)
    ax.set_ylabel("GFLOP/s")
    ax.legend()
    ax.set_title("The training step reaches the labelled share of the machine's matmul throughput")
    fig.tight_layout()
    plt.show()


runs = [("this build", live)] + ([("full run", full)] if full is not None else [])
vit_bars(runs)
for name, r in runs:
    if r.get("train_step_flops_fraction_cpu") is not None:
        print(f"{name}: {r['train_step_images_per_s']:.1f} images/s ({r['train_step_views_per_s']:.1f} views/s), "
              f"{r['train_step_flops'] / 1e9:.0f} GFLOP per step, {r['train_step_s']:.2f} s per step, "
              f"{r['train_step_threads']} thread(s)")
''', "hide-input"),
    md("""
## Augmentation

The paper's two-view pipeline (random resized crop, flip, colour jitter,
grayscale), batched on uint8 tensors by `spreadcon.data.augment.TwoViewAugment`,
against torchvision's per-image PIL transforms with the same parameters
(`spreadcon.data.augment.benchmark_augment`), both on one thread.
"""),
    code('''
fig, ax = plt.subplots(figsize=(6, 3))
labels, pil, batched = [], [], []
for name, r in runs:
    if r.get("augment_speedup_vs_pil") is None:
        continue
    labels.append(name)
    pil.append(r["augment"]["pil_images_per_s"])
    batched.append(r["augment"]["batched_images_per_s"])
x = range(len(labels))
ax.barh([i + 0.2 for i in x], batched, 0.4, label="batched on tensors")
ax.barh([i - 0.2 for i in x], pil, 0.4, label="per-image PIL torchvision")
ax.set_yticks(list(x), labels)
ax.set_xlabel("augmented views per second (32x32, one thread)")
ax.legend()
ax.set_title(", ".join(f"{n}: {b / p:.1f}x" for n, b, p in zip(labels, batched, pil)) + " faster than PIL"
             if labels else "")
fig.tight_layout()
plt.show()
''', "hide-input"),
    md("""
## Memory the allocator hands back

A training step on the CPU allocates and frees activations of many MiB. glibc's
`malloc` serves such blocks with fresh `mmap`s and returns them to the kernel
on `free`, so every step the kernel hands out zeroed pages again, and every
first touch of a page is a minor page fault. `spreadcon.malloc.keep_freed_memory`
raises the two thresholds through `mallopt`, so freed blocks stay in the
process and are reused; the training engine and the bench apply it. The bench
runs the ViT step in two fresh processes, one with the defaults and one with
the setting, and counts the faults (`ru_minflt`).
"""),
    code('''
for name, r in runs:
    if r.get("allocator_speedup") is None:
        print(f"{name}: not measured ({r.get('allocator_speedup_reason', 'no allocator section in this run')})")
        continue
    print(f"{name}: ViT step at batch {r['allocator_batch']} x 2 views, 1 thread\\n"
          f"  minor page faults per step: {r['allocator_default_minflt_per_step']:,.0f} with glibc's defaults, "
          f"{r['allocator_kept_minflt_per_step']:,.0f} with keep_freed_memory\\n"
          f"  time per step: {r['allocator_default_s']:.2f} s against {r['allocator_kept_s']:.2f} s "
          f"({r['allocator_speedup']:.2f}x)")
''', "hide-input"),
    md("""
## The committed full run

The figures above come from this build's quick run. The newest full run
(B up to 2048, the paper's batch for the ViT step, more repeats) is read here
with the machine it ran on.
"""),
    code('''
KEYS = ["loss_speedup_vs_loop_b512", "loss_vs_pml_supcon_b512", "train_step_flops_fraction_cpu",
        "augment_speedup_vs_pil", "allocator_speedup"]
TARGETS = {"loss_speedup_vs_loop_b512": ">= 50", "loss_vs_pml_supcon_b512": "<= 1.0",
           "train_step_flops_fraction_cpu": ">= 0.40", "augment_speedup_vs_pil": ">= 5",
           "allocator_speedup": "(none)"}


def fmt(v):
    return "not measured" if v is None else f"{v:.3g}"


rows = [f"| {k} | {TARGETS[k]} | {fmt(live.get(k))} | {fmt(full.get(k)) if full else 'no full run committed'} |"
        for k in KEYS]
from IPython.display import Markdown, display

display(Markdown("| figure | target | this build (quick) | full run |\\n|---|---|---|---|\\n" + "\\n".join(rows)))
if full is None:
    print("No full run committed. Make one with: python -m spreadcon bench --json --out results/bench/cpu-COMMIT.json")
else:
    fm = full["machine"]
    print(f"full run: {fm['cpu']}, {fm['cpu_cores']} cores, {fm['bench_threads']} torch thread(s), "
          f"torch {fm['torch_version']}," + NL + f"  commit {full.get('git_commit')}," + NL + "  "
          f"load average {fm['load_avg_1m_start']} at the start and {fm['load_avg_1m_end']} at the end, "
          f"{full['wall_time_s'] / 60:.1f} min")
    plot_losses(full, f"Full run: at B = 512 ours is {full['loss_speedup_vs_loop_b512']:.0f}x faster than the loop")
''', "hide-input"),
    md("""
Every full run is kept as `results/bench/cpu-<commit>.json`. Read together they show how the figures moved with the code, and
how much the same code moves with the machine's load: the loss ratio is a
quotient of two timings taken on a shared VM, so treat differences of 15% as noise.
"""),
    code('''
lines = ["| commit | load at start / end | loss vs loop (B = 512) | SupCon / PML | ViT step / sgemm | augment vs PIL |",
         "|---|---|---|---|---|---|"]
for path in archive:
    r = json.loads(path.read_text())
    rm = r["machine"]
    lines.append(f"| {str(r.get('git_commit'))[:7]} | {rm['load_avg_1m_start']} / {rm['load_avg_1m_end']} | "
                 f"{fmt(r.get('loss_speedup_vs_loop_b512'))} | {fmt(r.get('loss_vs_pml_supcon_b512'))} | "
                 f"{fmt(r.get('train_step_flops_fraction_cpu'))} | {fmt(r.get('augment_speedup_vs_pil'))} |")
display(Markdown("\\n".join(lines)))
''', "hide-input"),
    md("""
## A training step that never waits for the GPU

A GPU is fast only while Python queues kernels ahead of it. Any call that
needs a value the device computed (`.item()`, `bool(t)`, `.tolist()`,
`torch.unique`, `bincount`, boolean-mask indexing, a `torch.tensor(...)` built
on the device) makes the host wait until the queue drains. The training step
of `spreadcon.engine.train_step` has none: the losses get the number of classes
instead of calling `unique`, skip their per-call NaN check (the engine checks
the epoch means instead; on a CPU tensor they read the largest class size,
which costs nothing there, and on a GPU they gather every column instead), the
colour jitter uses masks instead of grouping
images by their op order, the random numbers come from a generator on the
device, batch indices move once per epoch, and AdamW is fused.

`spreadcon.syncs.HostSyncs` lists every such call that goes through torch's
Python API, on any machine, so this can be checked on a CPU; the tests assert
the list is empty for four methods. Below, one step of `spread` with the losses'
default checks, then as the engine runs it. On this CPU the second step still
shows one call, `Tensor.__int__` in `spreadcon.losses`: the loss reads the size
of the largest class, which costs nothing for a CPU tensor (there is no device
to wait for). For a tensor on a GPU it skips the read and gathers every column
instead; the tests take that path and find no call.
"""),
    code('''
from spreadcon import engine
from spreadcon.data import batches
from spreadcon.data.augment import TwoViewAugment
from spreadcon.data.datasets import Dataset, Split
from spreadcon.methods import Objective, build_model
from spreadcon.presets import resolve
from spreadcon.syncs import HostSyncs

torch.manual_seed(0)
toy = Split(fine=torch.arange(64) % 4, coarse=(torch.arange(64) % 4) // 2,
            images=torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8))
toy_ds = Dataset(name="toy", task="transfer", image_shape=(3, 16, 16), fine_names=list("abcd"),
                 coarse_names=["ab", "cd"], mean=(0.5,) * 3, std=(0.25,) * 3, grayscale_aug=True,
                 splits={"train": toy, "val": toy, "test": toy})
cfg = resolve("smoke", None, {"encoder": "cnn"})
model = build_model("spread", cfg, toy_ds.image_shape, toy_ds.n_coarse)
opt = engine.make_optimizer(model.parameters(), cfg, torch.device("cpu"))
gen = torch.Generator().manual_seed(0)
for label, objective, aug in [
        ("losses with their own checks, grouped colour jitter",
         Objective("spread", cfg), TwoViewAugment.for_dataset(toy_ds, sync_free=False)),
        ("as the engine runs it on a GPU",
         Objective("spread", cfg, num_classes=toy_ds.n_coarse, check_values=False),
         TwoViewAugment.for_dataset(toy_ds, sync_free=True))]:
    batch = next(batches(toy, 32, generator=gen))
    engine.train_step(model, objective, opt, aug, batch, cfg=cfg, generator=gen)  # warm-up
    with HostSyncs() as syncs:
        engine.train_step(model, objective, opt, aug, batch, cfg=cfg, generator=gen)
    names = sorted({c.split(" at ")[0] for c in syncs.calls})
    print(f"{label}: {len(syncs.calls)} host-syncing calls {names}")
'''),
    md("""
## On a GPU

With `--device cuda` the bench trains the `paper` preset (ViT, batch 128 x 2
views, bf16 autocast, `torch.compile`, fused AdamW, uint8 data and the
augmentation resident on the GPU) on CIFAR-10-shaped synthetic uint8 data for
two epochs, times the second, projects the 600-epoch schedule, and divides the
encoder's FLOP/s by the GPU's measured bf16 matmul FLOP/s.
"""),
    md("""
What the target asks of the hardware, before any measurement: the encoder's
FLOPs per step are counted (as for the CPU step above), so the FLOP/s that 600
epochs in 20 minutes need follow from the preset alone. This is arithmetic, not
a result; the measured figures are below it.
"""),
    code('''
from spreadcon.models.vit import vit_train_step_flops
from spreadcon.presets import resolve

paper = resolve("paper", "cifar10")
steps_per_epoch = 50000 // paper.batch_size
run_flops = vit_train_step_flops(paper.batch_size * paper.views, (3, 32, 32)) * steps_per_epoch * paper.epochs
need = run_flops / (20 * 60)
H200_BF16_DENSE = 989e12  # NVIDIA's data sheet figure for dense bf16 on the H200 SXM
print(f"{paper.epochs} epochs x {steps_per_epoch} steps of batch {paper.batch_size} x {paper.views} views: "
      f"{run_flops:.2e} encoder FLOPs; in 20 minutes that is {need / 1e12:.0f} TFLOP/s sustained, "
      f"{100 * need / H200_BF16_DENSE:.0f}% of the H200's data-sheet dense bf16 peak")
'''),
    code('''
gpu_path = default_results_dir() / "bench" / "gpu.json"
gpu_run = json.loads(gpu_path.read_text()) if gpu_path.exists() else None
gpu = (gpu_run or {}).get("gpu") or live["gpu"]
if gpu.get("gpu_epoch_s") is None:
    print("not measured yet: no GPU in this session.")
    print("run:", gpu.get("gpu_command", "python -m spreadcon bench --json --device cuda --out results/bench/gpu.json"))
else:
    for key in ("gpu_compile_true", "gpu_compile_false") if "gpu_compile_true" in (gpu_run or {}) else ("gpu",):
        g = (gpu_run or {}).get(key) or gpu
        print(f"{g['gpu_device']}, torch.compile {g.get('gpu_compile', 'on')}: {g['gpu_epoch_s']:.1f} s per epoch of "
              f"the paper preset on {g['gpu_train_images']} images; 600 epochs projected at "
              f"{g['gpu_projected_600_epochs_s'] / 60:.1f} min; "
              f"{100 * g['gpu_bf16_flops_fraction']:.0f}% of the measured bf16 matmul FLOP/s")
'''),
    md("""
## Reproduce

```bash
python -m spreadcon bench --json --quick                              # about a minute
python -m spreadcon bench --json --out results/bench/cpu-$(git rev-parse --short HEAD).json   # a full CPU run (minutes)
python -m spreadcon bench --json --device cuda --out results/bench/gpu.json   # adds the GPU section
bash .ci/gpu_check.sh   # on a CUDA machine: the CUDA tests, then the GPU section with torch.compile on and off
```

`--threads N` sets the torch threads of the CPU sections (default 1; 0 keeps
torch's default). The output is one JSON object; `machine` holds the CPU, the
thread counts, the torch version and the load averages, and `git_commit` the
code that ran.
"""),
]


def main() -> None:
    write("appendix_performance", notebook(CELLS))


if __name__ == "__main__":
    main()
