"""Run chapters the way Colab sees them: alone, in an empty folder, after the install cell's own command.

    python .ci/colab_sim.py [CHAPTER ...]      # default: 01_class_collapse 05_transfer

For each chapter this

1. makes a clean virtual environment outside the checkout, with only what a
   fresh Colab runtime already has (torch and torchvision, at this project's
   pins so that no multi-GB build is fetched; ipykernel and nbclient to run
   the notebook);
2. copies ``book/CHAPTER.ipynb`` alone into an empty folder;
3. executes it there with ``SPREADCON_COLAB=1``, so its first cell runs the
   install command it runs in Colab: clone the repository from
   ``SPREADCON_REPO`` (swapped here for this checkout, the one documented
   variable) and ``pip install`` it with the ``[book]`` extra;
4. checks that it ran top to bottom and found the recorded results: it shows
   exactly as many cells from records ("(n=3)") and "not run yet" cells as the
   same chapter executed in the checkout (``book/CHAPTER.ipynb`` after
   ``make test --overwrite``), when that is available; otherwise a chapter
   that reads records must show at least one.

A missing dependency, a path that assumes the checkout, or records that are not
found fail it. Exit 0 when every chapter passes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT = ["01_class_collapse", "05_transfer"]
READS_RECORDS = {"04_thanos", "05_transfer", "06_robustness"}  # chapters whose tables come from results/
COLAB_HAS = ["torch==2.14.1", "torchvision==0.29.1", "ipykernel", "nbclient", "nbformat"]


def sh(*cmd: str, **kw) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kw)


def outputs_text(nb: dict) -> str:
    parts = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", "") if isinstance(out.get("text"), str) else "".join(out.get("text", [])))
            for value in out.get("data", {}).values():
                parts.append(value if isinstance(value, str) else "".join(value) if isinstance(value, list) else "")
    return "\n".join(parts)


def main(chapters: list[str]) -> int:
    work = Path(tempfile.mkdtemp(prefix="spreadcon-colab-sim-"))
    venv = work / "venv"
    sh(sys.executable, "-m", "venv", str(venv))
    py = str(venv / "bin" / "python")
    sh(py, "-m", "pip", "install", "--progress-bar", "off", *COLAB_HAS)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))}
    # Colab would download the datasets; offline, the data root stands in for that download
    env.setdefault("SPREADCON_DATA", str(REPO.parent / "shared" / "data"))
    env.update(SPREADCON_COLAB="1", SPREADCON_REPO=str(REPO), SPREADCON_CHECKOUT=str(work / "checkout"),
               PATH=f"{venv / 'bin'}:{env.get('PATH', '')}", MPLBACKEND="agg")
    runner = (
        "import sys, nbformat, nbclient\n"
        "nb = nbformat.read(sys.argv[1], as_version=4)\n"
        "nbclient.NotebookClient(nb, timeout=1800, kernel_name='python3').execute()\n"
        "nbformat.write(nb, sys.argv[2])\n"
    )
    failed = []
    for name in chapters:
        folder = work / f"run-{name}"
        folder.mkdir()
        shutil.copy(REPO / "book" / f"{name}.ipynb", folder / f"{name}.ipynb")
        start = time.monotonic()
        print(f"+ execute {name}.ipynb alone in {folder}", flush=True)
        out = subprocess.run([py, "-c", runner, f"{name}.ipynb", "executed.ipynb"], cwd=folder, env=env,
                             capture_output=True, text=True)
        if out.returncode:
            tail = "\n".join((out.stdout + out.stderr).strip().splitlines()[-25:])
            print(tail, file=sys.stderr)
            failed.append(f"{name}: the notebook failed in a clean environment (its error is above)")
            continue
        text = outputs_text(json.loads((folder / "executed.ipynb").read_text()))
        missing, found = text.count("not run yet"), text.count("(n=")  # empty cells; cells from records
        ref_text = outputs_text(json.loads((REPO / "book" / f"{name}.ipynb").read_text()))
        if ref_text.strip():  # the same chapter executed in the checkout (after make test --overwrite)
            if (missing, found) != (ref_text.count("not run yet"), ref_text.count("(n=")):
                failed.append(f"{name}: {found} cells from records and {missing} 'not run yet' alone, "
                              f"{ref_text.count('(n=')} and {ref_text.count('not run yet')} in the checkout")
        elif name in READS_RECORDS and not found:
            failed.append(f"{name}: no cell shows a recorded result: the records were not found")
        print(f"== {name}: ran alone in {time.monotonic() - start:.0f} s, {found} cells from records, "
              f"{missing} 'not run yet'", flush=True)
    if failed and os.environ.get("SPREADCON_SIM_KEEP"):
        print(f"kept {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)
    for line in failed:
        print(f"colab simulation: {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or DEFAULT))
