"""The GitHub workflows that test and publish the book say what the README says
they do (actionlint checks their syntax in .ci/run; this checks their intent)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / ".github" / "workflows"


def _load(name: str) -> dict:
    wf = yaml.safe_load((WORKFLOWS / name).read_text())
    wf["on"] = wf.pop(True, wf.get("on"))   # YAML 1.1 reads the key `on` as True
    return wf


def _steps(wf: dict) -> list[dict]:
    return [s for job in wf["jobs"].values() for s in job.get("steps", [])]


def _uses(wf: dict) -> list[str]:
    return [s["uses"].split("@")[0] for s in _steps(wf) if "uses" in s]


def _runs(wf: dict) -> list[str]:
    return [s["run"] for s in _steps(wf) if "run" in s]


def test_test_workflow_runs_the_readme_command_on_every_push_and_pull_request():
    wf = _load("test.yml")
    assert set(wf["on"]) == {"push", "pull_request"} and wf["on"]["push"] is None
    assert "make test" in _runs(wf)
    assert "make test" in (REPO / "README.md").read_text()


def test_pages_workflow_builds_once_and_deploys_from_main():
    wf = _load("pages.yml")
    assert wf["on"]["push"] == {"branches": ["main"]}
    assert wf["permissions"] == {"contents": "read", "pages": "write", "id-token": "write"}
    assert _runs(wf) == ["make ci"]
    assert "actions/upload-pages-artifact" in _uses(wf)
    upload = next(s for s in _steps(wf) if s.get("uses", "").startswith("actions/upload-pages-artifact"))
    assert upload["with"]["path"] == "_build/html"
    deploy = wf["jobs"]["deploy"]
    assert deploy["needs"] == "build" and deploy["environment"]["name"] == "github-pages"
    assert [s["uses"].split("@")[0] for s in deploy["steps"]] == ["actions/deploy-pages"]


def test_both_workflows_cache_pip_on_the_pins():
    for name in ("test.yml", "pages.yml"):
        setup = next(s for s in _steps(_load(name)) if s.get("uses", "").startswith("actions/setup-python"))
        assert setup["with"]["cache"] == "pip"
        assert "requirements.txt" in setup["with"]["cache-dependency-path"]


def test_make_ci_is_what_ci_runs():
    makefile = (REPO / "Makefile").read_text()
    ci = makefile.split("\nci:", 1)[1].split("\n\n", 1)[0]
    assert "check-pairs" in ci and "lint-workflows" in ci
    cold_test = '.ci/cold $(MAKE) test TESTS="book tests" PYTEST_ARGS="--overwrite -p no:cacheprovider"'
    assert cold_test in ci and "$(MAKE) book-from-executed" in ci
    run = (REPO / ".ci" / "run").read_text()
    steps = ["rm -rf _build", "make setup", "make check-pairs", "make lint-workflows",
             '.ci/cold make test TESTS="book tests" PYTEST_ARGS="--overwrite -p no:cacheprovider"',
             ".ci/cold .venv/bin/python .ci/colab_sim.py", "make book-from-executed"]
    assert [run.index(step) for step in steps] == sorted(run.index(step) for step in steps)  # in this order


def test_ci_executes_the_chapters_before_any_package_test():
    """On a new machine the chapters decode CIFAR-10 and the proxies first; with the package tests first,
    CI met warm caches and never saw what a chapter prints when it decodes."""
    def pytest_args(*make_args: str) -> list[str]:
        # Not the caller's make variables: under `make test TESTS=...` (CI) they reach this make through MAKEFLAGS.
        env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "TESTS",
                                                              "PYTEST_ARGS"}}
        out = subprocess.run(["make", "-n", "test", *make_args], cwd=REPO, capture_output=True, text=True,
                             check=True, env=env).stdout
        line = next(line for line in out.splitlines() if "pytest --nbmake" in line)
        return line.split("pytest", 1)[1].split()

    assert pytest_args("TESTS=book tests", "PYTEST_ARGS=--overwrite")[-3:] == ["--overwrite", "book", "tests"]
    assert pytest_args()[-2:] == ["tests", "book"]  # the README's `make test` is unchanged


def test_cold_runs_a_command_on_empty_caches_it_removes_afterwards(tmp_path):
    warm = tmp_path / "warm"
    (warm / "decoded").mkdir(parents=True)
    (warm / "decoded" / "cifar10-jpeg-0123456789abcdef.pt").write_bytes(b"x")
    (warm / "matplotlib").mkdir()
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PIP_CACHE_DIR"}
    env.update(XDG_CACHE_HOME=str(warm), SPREADCON_CACHE=str(warm / "decoded"), TMPDIR=str(temp))
    script = ('printf "%s\\n" "$SPREADCON_CACHE" "$XDG_CACHE_HOME" "$PIP_CACHE_DIR"; ls -A "$XDG_CACHE_HOME"; '
              'test ! -e "$SPREADCON_CACHE" || echo "not empty"; exit 7')
    r = subprocess.run([str(REPO / ".ci" / "cold"), "sh", "-c", script], env=env, capture_output=True, text=True)
    assert r.returncode == 7, r.stderr                     # the command's exit status
    cache, xdg, pip, *listing = r.stdout.splitlines()
    assert Path(cache).parent == Path(xdg).parent and Path(xdg).parent.parent == temp
    assert listing == ["matplotlib"]                       # other tools' caches stay in use: matplotlib's,
    assert pip == str(warm / "pip")                        # and pip's
    assert list(temp.iterdir()) == []                      # removed afterwards
    assert (warm / "decoded" / "cifar10-jpeg-0123456789abcdef.pt").is_file()  # the user's caches untouched


def test_the_bibliography_parses_and_holds_every_cited_key():
    """A merge that drops one closing brace stops the whole book build (sphinxcontrib-bibtex): catch it here."""
    import re
    from pathlib import Path

    from pybtex.database import parse_file

    root = Path(__file__).resolve().parents[1]
    keys = set(parse_file(str(root / "book" / "references.bib")).entries)
    cited = {k.strip() for page in (root / "book").glob("*.md")
             for group in re.findall(r"\{cite(?::[a-z]+)?\}`([^`]+)`", page.read_text()) for k in group.split(",")}
    assert cited and not cited - keys, sorted(cited - keys)
