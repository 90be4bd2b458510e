"""Checks of the book's structure: table of contents, setup cells, configuration."""
import json
import re
import sys
from pathlib import Path

import yaml

import nnbook

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import stamp_setup  # noqa: E402


def _toc_files():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [c["file"] for c in part.get("chapters", [])]
    return files


def test_toc_lists_only_existing_pages_and_every_chapter():
    files = _toc_files()
    for f in files:
        assert any((ROOT / f"{f}{ext}").exists() for ext in (".md", ".ipynb")), f"_toc.yml lists missing page {f}"
    chapters = {f"chapters/{p.stem}" for p in (ROOT / "chapters").glob("*.ipynb")}
    assert chapters <= set(files), f"chapters missing from _toc.yml: {sorted(chapters - set(files))}"


def test_setup_cells_are_stamped_from_config_and_version():
    src = stamp_setup.setup_source()
    assert f'nnbook.check_version("{nnbook.__version__}")' in src
    assert "git+" + stamp_setup.repository_url() in src
    for nb_path in sorted((ROOT / "chapters").glob("*.ipynb")):
        nb = json.loads(nb_path.read_text())
        setup = [c for c in nb["cells"] if "nnbook-setup" in c.get("metadata", {}).get("tags", [])]
        assert len(setup) == 1, f"{nb_path.name}: expected one cell tagged nnbook-setup"
        code_cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert code_cells[0] is setup[0], f"{nb_path.name}: the setup cell must be the first code cell"
        assert "".join(setup[0]["source"]) == src, f"{nb_path.name}: run tools/stamp_setup.py and re-execute"


def test_version_is_written_consistently():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(rf'^version = "{re.escape(nnbook.__version__)}"', pyproject, re.M)


def test_every_cited_key_is_in_the_bibliography():
    bib = (ROOT / "book/references.bib").read_text()
    keys = set(re.findall(r"@\w+\{([^,]+),", bib))
    for nb_path in sorted((ROOT / "chapters").glob("*.ipynb")):
        text = "".join("".join(c["source"]) for c in json.loads(nb_path.read_text())["cells"] if c["cell_type"] == "markdown")
        for group in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", text):
            for key in group.split(","):
                assert key.strip() in keys, f"{nb_path.name} cites unknown key {key.strip()!r}"
