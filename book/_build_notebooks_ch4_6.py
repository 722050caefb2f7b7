"""Write book/experiment.ipynb and chapters 4-6 (without outputs) with nbformat.

Run from the repository root:  .venv/bin/python book/_build_notebooks_ch4_6.py
The notebooks are generated, so edit this file, not the .ipynb files.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

BOOK = Path(__file__).resolve().parent

COLAB = (
    "import sys\n"
    'if "google.colab" in sys.modules:\n'
    "    get_ipython().run_line_magic(\"pip\", \"install -q 'spreadcon[book] @ git+https://github.com/spreadcon/spreadcon'\")"
)


def md(text: str):
    return new_markdown_cell(text.strip("\n"))


def code(text: str, *tags: str):
    cell = new_code_cell(text.strip("\n"))
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def notebook(cells) -> nbformat.NotebookNode:
    nb = new_notebook(cells=[code(COLAB, "remove-cell"), *cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def write(name: str, nb: nbformat.NotebookNode) -> None:
    nbformat.validate(nb)
    path = BOOK / f"{name}.ipynb"
    path.write_text(nbformat.writes(nb) + "\n")
    print(f"wrote {path}")


# ---------------------------------------------------------------------------
# The papermill template: one (dataset, method, preset, seed, alpha) -> one record
# ---------------------------------------------------------------------------

EXPERIMENT = [
    md("""
# Experiment template

Every recorded result in this book comes from this notebook. It trains one
method on one dataset's coarse labels, evaluates the frozen representation
(fine-label transfer, or worst-group robustness), and writes one result record
with its provenance: the git commit, torch version, device, start time, wall
time and the full resolved configuration.

`python -m spreadcon reproduce` executes it once per run of a grid with
[papermill](https://papermill.readthedocs.io), passing the values of the
`parameters` cell below, and keeps each executed copy under `runs/`. When the
book is built, it runs with its defaults: a `smoke` run of a few seconds, whose
numbers mean nothing and whose record goes to a temporary folder, never to
`results/`.
"""),
    code('''
dataset = "mnist"    # a name in spreadcon.data.DATASETS
method = "spread"    # ce, supcon, spread (SupCon + cNCE), autoencoder, thanos, ...
preset = "smoke"     # smoke: seconds, numbers meaningless | cpu: minutes on a CPU | paper: the paper's recipe, GPU
seed = 0             # initialisation, shuffling and augmentation seed
alpha = None         # cNCE weight in L_spread; None = the preset's (0.5)
data_root = None     # None = $SPREADCON_DATA, else ~/.cache/spreadcon
results_dir = None   # None = a temporary folder; the grid passes the repository's results/
overrides = {}       # {config key: value} on top of the preset, e.g. {"epochs": 2}
# The paper's setting (GPU, about a day for CIFAR-10 at 600 epochs):
#   papermill book/experiment.ipynb runs/cifar10_thanos.ipynb -p dataset cifar10 -p method thanos \\
#       -p preset paper -p results_dir results
# or, for a whole grid:  python -m spreadcon reproduce --preset paper --datasets cifar10 --methods thanos --seeds 0
''', "parameters"),
    code('''
import json
import tempfile

from IPython.display import Markdown, display
from myst_nb import glue

from spreadcon.presets import resolve
from spreadcon.run import run_experiment

if results_dir is None:
    results_dir = tempfile.mkdtemp(prefix="spreadcon-experiment-")
cfg = resolve(preset, dataset, {**overrides, **({} if alpha is None else {"alpha": alpha})})
print(f"{dataset} / {method} / preset {preset} / seed {seed}: encoder {cfg.encoder}, "
      f"{cfg.epochs} epochs, batch {cfg.batch_size} x {cfg.views} views, alpha {cfg.alpha}, "
      f"train images {cfg.train_size or 'all'}")
'''),
    code('''
path = run_experiment(dataset, method, preset=preset, seed=seed, data_root=data_root,
                      results_dir=results_dir, overrides=overrides, alpha=alpha)
record = json.loads(path.read_text())
print(path)
'''),
    md("""
## The record

The metrics below are read back from the record file just written.
"""),
    code('''
prov = record["provenance"]
rows = [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |"
        for k, v in sorted(record["metrics"].items())]
rows += [f"| provenance: {k} | {prov[k]} |" for k in ("git_commit", "torch_version", "device", "started_at")]
rows += [f"| provenance: wall_time_s | {prov['wall_time_s']:.1f} |"]
display(Markdown("| key | value |\\n|---|---|\\n" + "\\n".join(rows)))

headline = "fine_test_acc" if record["task"] == "transfer" else "worst_group_acc"
glue("experiment_headline_name", headline, display=False)
glue("experiment_headline_value", f"{100 * record['metrics'][headline]:.1f}%", display=False)
glue("experiment_wall_time", f"{prov['wall_time_s']:.0f} s", display=False)
glue("experiment_device", prov["device"], display=False)
'''),
    md("""
This build's run reached {glue:text}`experiment_headline_name` =
{glue:text}`experiment_headline_value` in {glue:text}`experiment_wall_time` on
{glue:text}`experiment_device`. With the default `smoke` preset that number only
proves the pipeline runs end to end; chapters 5 and 6 show the recorded `cpu`
and `paper` runs.
"""),
]


def main() -> None:
    write("experiment", notebook(EXPERIMENT))


if __name__ == "__main__":
    main()
