"""The documentation site (`docs/`, `mkdocs.yml`): every public name has an API entry, every
page is in the navigation, every preset is on the papers' page, and the Python code of every
page runs as written (in a fresh namespace per page, in a scratch directory). The site itself
is built with `mkdocs build --strict` by `.ci/run`; the slow test builds it too and opens it
in a headless browser when one is installed."""

import copy
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

import eqx_eqprop as ep
import eqx_eqprop.internal as internal
from eqx_eqprop.internal import REGISTRY

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
FENCE = re.compile(r"(<!-- not run[^>]*-->\s*\n)?```python\n(.*?)```", re.DOTALL)


def public_names(module) -> set[str]:
    return {
        name
        for name in dir(module)
        if not name.startswith("_") and not isinstance(getattr(module, name), types.ModuleType)
    }


def documented(prefix: str) -> set[str]:
    entry = re.compile(rf"^::: {re.escape(prefix)}\.(\w+)\s*$", re.MULTILINE)
    return {
        m.group(1) for page in (DOCS / "api").glob("*.md") for m in entry.finditer(page.read_text())
    }


@pytest.mark.parametrize("module", [ep, internal], ids=["eqx_eqprop", "internal"])
def test_every_public_name_has_an_api_entry(module):
    names = public_names(module)
    entries = documented(module.__name__)
    assert names - entries == set(), f"no API entry in docs/api/ for {sorted(names - entries)}"
    assert entries - names == set(), f"API entries for names that do not exist: {entries - names}"


def test_the_api_pages_do_not_document_a_name_twice():
    entry = re.compile(r"^::: ([\w.]+)\s*$", re.MULTILINE)
    found = [
        m.group(1) for page in (DOCS / "api").glob("*.md") for m in entry.finditer(page.read_text())
    ]
    assert len(found) == len(set(found)), sorted({n for n in found if found.count(n) > 1})


def test_every_page_is_in_the_navigation_and_every_nav_entry_exists():
    config = (ROOT / "mkdocs.yml").read_text()
    nav = set(re.findall(r":\s+([\w/.-]+\.(?:md|ipynb))\s*$", config, re.MULTILINE))
    generated = {p for p in nav if p.startswith(("results/", "notebooks/")) or p == "changelog.md"}
    assert set(PAGES) - nav == set(), f"pages missing from mkdocs.yml's nav: {set(PAGES) - nav}"
    assert nav - generated - set(PAGES) == set()
    notebooks = {f"notebooks/{p.name}" for p in (ROOT / "notebooks").glob("*.ipynb")}
    results = {f"results/{p.name}" for p in (ROOT / "experiments/results").glob("*.md")}
    assert notebooks | results | {"results/benchmarks.md", "changelog.md"} == generated


def test_the_papers_page_names_every_preset():
    text = (DOCS / "guides/papers.md").read_text()
    missing = [name for name in ep.preset_names() if f"`{name}`" not in text]
    assert missing == [], f"presets missing from docs/guides/papers.md: {missing}"


def code_of(page: str) -> list[str]:
    return [m.group(2) for m in FENCE.finditer((DOCS / page).read_text()) if m.group(1) is None]


RUNNABLE = [page for page in PAGES if code_of(page)]
# the guides that train a network run with the long tests (`-m slow`), like notebooks
# 01-03, which keeps the default run under 12 minutes on 2 cores
TRAINING = {
    "guides/mnist.md",
    "guides/new_network.md",
    "guides/trained_gradient.md",
    "guides/checkpoints.md",
}


def test_the_guides_and_concepts_have_code_that_runs():
    assert {"index.md", "guides/new_network.md", "guides/new_estimator.md"} <= set(RUNNABLE)
    assert TRAINING <= set(RUNNABLE)


@pytest.mark.parametrize(
    "page", [pytest.param(p, marks=pytest.mark.slow) if p in TRAINING else p for p in RUNNABLE]
)
def test_the_code_of_each_page_runs(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    registry = copy.copy({k: dict(v) for k, v in REGISTRY.items()})
    namespace = {"__name__": "docs_" + re.sub(r"\W", "_", page)}
    module = types.ModuleType(namespace["__name__"])
    monkeypatch.setitem(sys.modules, module.__name__, module)
    namespace = module.__dict__
    try:
        for i, block in enumerate(code_of(page)):
            exec(compile(block, f"docs/{page} (block {i + 1})", "exec"), namespace)
    finally:
        for section, kinds in registry.items():
            REGISTRY[section].clear()
            REGISTRY[section].update(kinds)


@pytest.mark.slow
def test_the_site_builds_strictly_and_a_browser_renders_it(tmp_path):
    mkdocs = shutil.which("mkdocs")
    if mkdocs is None:
        pytest.skip('mkdocs is not installed (pip install -e ".[docs]")')
    site = tmp_path / "site"
    subprocess.run([mkdocs, "build", "--strict", "--site-dir", str(site)], cwd=ROOT, check=True)
    for page in ("index.html", "api/models/index.html", "notebooks/00_quickstart/index.html"):
        assert (site / page).is_file(), page
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no headless Chromium to render the site with")
    for page, expected in [
        ("index.html", "Headline results"),
        ("api/models/index.html", "EnergyMLP"),
        ("notebooks/00_quickstart/index.html", "digits"),
    ]:
        dom = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
             (site / page).as_uri()],
            capture_output=True, text=True, timeout=120, check=True,
        ).stdout  # fmt: skip
        assert expected in dom, page
