"""The GitHub workflows that test and publish the book say what the README says
they do (actionlint checks their syntax in .ci/run; this checks their intent)."""

from __future__ import annotations

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
    assert '$(MAKE) test PYTEST_ARGS="--overwrite -p no:cacheprovider"' in ci
    assert "$(MAKE) book-from-executed" in ci
    run = (REPO / ".ci" / "run").read_text()
    for step in ("make check-pairs", "make lint-workflows", 'make test PYTEST_ARGS="--overwrite -p no:cacheprovider"',
                 "make book-from-executed"):
        assert step in run
