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
    def walk(entries):  # a chapter's later notebooks (4b, 5b, 5c) are its sections
        for entry in entries:
            files.append(entry["file"])
            walk(entry.get("sections", []))

    for part in toc.get("parts", []):
        walk(part.get("chapters", []))
    return files


def test_toc_lists_only_existing_pages_and_every_chapter():
    files = _toc_files()
    for f in files:
        assert any((ROOT / f"{f}{ext}").exists() for ext in (".md", ".ipynb")), f"_toc.yml lists missing page {f}"
    chapters = {f"chapters/{p.stem}" for p in (ROOT / "chapters").glob("*.ipynb")}
    assert chapters <= set(files), f"chapters missing from _toc.yml: {sorted(chapters - set(files))}"


def test_setup_cells_are_stamped_from_config_and_version():
    src = stamp_setup.setup_source()
    url = stamp_setup.repository_url()
    assert f'nnbook.check_version("{nnbook.__version__}", "{url}")' in src
    # the release the notebook was executed with, never the moving main branch
    assert f'"nnbook[book] @ git+{url}@v{nnbook.__version__}"' in src
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
    # every release the setup cells install has its entry in the changelog
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert re.search(rf"^## \[?{re.escape(nnbook.__version__)}\]?", changelog, re.M), \
        f"CHANGELOG.md has no entry for {nnbook.__version__}"


def test_every_cited_key_is_in_the_bibliography():
    bib = (ROOT / "book/references.bib").read_text()
    keys = set(re.findall(r"@\w+\{([^,]+),", bib))
    for nb_path in sorted((ROOT / "chapters").glob("*.ipynb")):
        text = "".join("".join(c["source"]) for c in json.loads(nb_path.read_text())["cells"] if c["cell_type"] == "markdown")
        for group in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", text):
            for key in group.split(","):
                assert key.strip() in keys, f"{nb_path.name} cites unknown key {key.strip()!r}"


# --------------------------------------------------------------------------- the reader's book (issue 14)
# Static checks of what the rendered pages are made of; tests/test_browser.py looks at the pages themselves.

import ast  # noqa: E402
import tomllib  # noqa: E402
from importlib.metadata import packages_distributions  # noqa: E402

sys.path.insert(0, str(ROOT / "book" / "_ext"))
import nnbook_sphinx  # noqa: E402
import retag  # noqa: E402

CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
PROGRESS_TEXT = re.compile(r"\r|\d+%\|[█▏▎▍▌▋▊▉ #]*\||it/s\]")


def _nb(path):
    return json.loads(path.read_text(encoding="utf-8"))


def test_no_nbval_comment_markers_only_tags():
    for nb_path in CHAPTERS:
        for i, cell in enumerate(_nb(nb_path)["cells"]):
            if cell["cell_type"] != "code":
                continue
            for line in "".join(cell["source"]).splitlines():
                assert not retag.MARKER_LINE.match(line), (
                    f"{nb_path.name} cell {i}: {line.strip()!r} is shown to readers; "
                    "run tools/retag.py (it turns it into a cell tag) and re-execute")


def test_setup_cell_is_collapsed():
    for nb_path in CHAPTERS:
        setup = [c for c in _nb(nb_path)["cells"] if "nnbook-setup" in c.get("metadata", {}).get("tags", [])]
        assert setup and "hide-input" in setup[0]["metadata"]["tags"], (
            f"{nb_path.name}: the setup cell must be tagged hide-input (tools/stamp_setup.py does it)")


def test_no_widget_views_or_progress_bars_in_stored_outputs():
    """Widget views render blank in the book (they need a CDN and a kernel); progress bars are not stored."""
    for nb_path in CHAPTERS:
        nb = _nb(nb_path)
        assert "widgets" not in nb["metadata"], (
            f"{nb_path.name}: stored widget state; re-execute with tools/execute.py (NNBOOK_PROGRESS=off)")
        for i, cell in enumerate(nb["cells"]):
            for out in cell.get("outputs", []):
                assert WIDGET_VIEW not in out.get("data", {}), (
                    f"{nb_path.name} cell {i}: a widget view is stored (blank in the book); for a progress bar "
                    "re-execute with tools/execute.py, for an interactive widget tag the cell remove-output "
                    "and show a static figure")
                text = "".join(out.get("text", "")) if out.get("output_type") == "stream" else ""
                assert not PROGRESS_TEXT.search(text), (
                    f"{nb_path.name} cell {i}: a progress bar is stored as text: {text[:80]!r}")


def test_every_chapter_has_a_run_stamp():
    for nb_path in CHAPTERS:
        meta = _nb(nb_path)["metadata"].get("nnbook")
        sentence = nnbook_sphinx.stamp_text(meta)
        assert sentence, (f"{nb_path.name}: metadata.nnbook is missing or incomplete ({meta!r}); "
                          "execute it with tools/execute.py")


def test_run_stamp_sentence():
    meta = {"executed": "2026-11-21", "nnbook": "0.1.0", "torch": "2.5.1", "python": "3.11.9",
            "cpu": "AMD EPYC 7B13", "cpu_count": 2, "wall_time_s": 31.44, "gpu": None}
    assert nnbook_sphinx.stamp_text(meta) == (
        "Executed on 2026-11-21 with nnbook 0.1.0, PyTorch 2.5.1, Python 3.11.9 on AMD EPYC 7B13 "
        "(2 threads) in 31.4 s.")
    assert nnbook_sphinx.stamp_text({**meta, "gpu": "NVIDIA H100"}).endswith("(2 threads) and NVIDIA H100 in 31.4 s.")
    assert nnbook_sphinx.stamp_text({**meta, "cpu_count": 1}).count("(1 thread)") == 1
    for key in nnbook_sphinx.STAMP_KEYS:
        assert nnbook_sphinx.stamp_text({k: v for k, v in meta.items() if k != key}) is None, key
    assert nnbook_sphinx.stamp_text(None) is None


def test_retag_turns_markers_into_tags_and_is_idempotent():
    plot = "fig, ax = plt.subplots()\n" + "ax.plot([1, 2], [3, 4])\n" * 7 + "plt.show()\n"
    cells = [
        {"cell_type": "code", "metadata": {}, "source": "# NBVAL_IGNORE_OUTPUT\nprint(time.time())\n"},
        {"cell_type": "code", "metadata": {"tags": ["x"]}, "source": "#NBVAL_RAISES_EXCEPTION\n1 / 0\n"},
        {"cell_type": "code", "metadata": {}, "source": plot},
        {"cell_type": "code", "metadata": {}, "source": plot + "assert True\n"},
        {"cell_type": "markdown", "metadata": {}, "source": "# NBVAL_IGNORE_OUTPUT in prose stays"},
    ]
    assert [retag.retag_cell(c) for c in cells] == [True, True, True, False, False]
    assert cells[0]["source"] == "print(time.time())\n" and cells[0]["metadata"]["tags"] == ["nbval-ignore-output"]
    assert cells[1]["metadata"]["tags"] == ["x", "raises-exception"] and cells[1]["source"] == "1 / 0\n"
    assert cells[2]["metadata"]["tags"] == ["hide-input"]
    assert "tags" not in cells[3]["metadata"]  # it checks a number: the reader sees its code
    assert [retag.retag_cell(c) for c in cells] == [False] * 5


def test_book_config_bundles_mathjax_and_css():
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    sphinx_cfg = cfg["sphinx"]["config"]
    static = [ROOT / p for p in sphinx_cfg["html_static_path"]]
    assert all(p.is_dir() for p in static), static
    # a root _static folder would make Jupyter Book inject every .js in html_static_path (MathJax's modules) as a page script
    assert not (ROOT / "_static").exists(), "use book/_static (listed in html_static_path), not a root _static folder"
    mathjax = [p / sphinx_cfg["mathjax_path"] for p in static if (p / sphinx_cfg["mathjax_path"]).is_file()]
    assert mathjax, f"mathjax_path {sphinx_cfg['mathjax_path']!r} is not in html_static_path"
    bundle = mathjax[0].parent
    assert (bundle / "LICENSE").is_file() and (bundle / "output/chtml/fonts/woff-v2").is_dir()
    assert not any("_static" in p.parts for p in bundle.parents if p.is_relative_to(ROOT)), "MathJax must not live under _static/"
    for css in sphinx_cfg["html_css_files"]:
        assert any((p / css).is_file() for p in static), css


def test_repository_address_is_written_once():
    url = stamp_setup.repository_url()
    config_text = (ROOT / "_config.yml").read_text(encoding="utf-8")
    assert config_text.count(url) == 1
    places = [ROOT / "pyproject.toml", ROOT / "requirements.txt", *ROOT.glob("tools/*.py"), *ROOT.glob("nnbook/*.py")]
    written = [p.relative_to(ROOT).as_posix() for p in places if url in p.read_text(encoding="utf-8")]
    assert not written, f"{url} is written in {written}; read it from _config.yml (tools/stamp_setup.repository_url)"


def _imports(source: str) -> set[str]:
    """Top-level names of the modules a piece of code imports, except inside ``try: ... except ImportError``."""
    try:
        tree = ast.parse(source)
    except SyntaxError:  # IPython-only syntax in a cell: nothing to check there
        return set()
    optional = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                or isinstance(h.type, ast.Tuple) and any(getattr(e, "id", "") in ("ImportError", "ModuleNotFoundError")
                                                          for e in h.type.elts)
                for h in node.handlers):
            optional |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    names = set()
    for node in ast.walk(tree):
        if id(node) in optional:
            continue
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _dist_name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[@]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_nnbook_declares_what_the_chapters_import():
    """A fresh runtime that installs ``nnbook[book]`` (the setup cell does) has every module the chapters use.

    The one exception is torchao: chapter 5c imports it inside ``try`` and skips its section without it,
    so it lives in an extra of its own (``nnbook[torchao]``, with the torch floor it needs).
    """
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    declared = {_dist_name(r) for r in project["dependencies"] + extras["book"]}
    assert "torchao" in {_dist_name(r) for r in extras["torchao"]}
    assert "torchao" not in declared, "torchao belongs to its own extra: Colab's torch may not fit it"
    declared.add("torchao")
    sources = {p.relative_to(ROOT).as_posix(): p.read_text(encoding="utf-8") for p in ROOT.glob("nnbook/**/*.py")}
    for nb_path in CHAPTERS:
        for i, c in enumerate(_nb(nb_path)["cells"]):
            if c["cell_type"] == "code":
                sources[f"{nb_path.name} cell {i}"] = "\n".join(
                    ln for ln in "".join(c["source"]).splitlines() if not ln.lstrip().startswith(("%", "!")))
    dists = packages_distributions()
    missing = {}
    for where, source in sources.items():
        for mod in _imports(source) - set(sys.stdlib_module_names) - {"nnbook", "__future__"}:
            names = {d.lower().replace("_", "-") for d in dists.get(mod, [])}
            if not names:
                missing.setdefault(where, []).append(f"{mod} (not installed here)")
            elif not names & declared:
                missing.setdefault(where, []).append(f"{mod} (from {sorted(names)[0]})")
    assert not missing, f"imports not declared in pyproject.toml (dependencies or the book extra): {missing}"
