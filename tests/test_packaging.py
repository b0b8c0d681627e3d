"""The package as a user gets it: one version, a wheel that carries the presets, the
license and the type marker, and (slow) that wheel installed into a fresh virtual
environment, used from another directory: the CLI lists and trains a preset, and the
README's example runs."""

import importlib.metadata
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import eqx_eqprop as ep

ROOT = Path(__file__).resolve().parent.parent


def test_the_version_is_defined_once():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"]
    assert pyproject["project"]["dynamic"] == ["version"]
    assert importlib.metadata.version("eqx_eqprop") == ep.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", ep.__version__)
    # the changelog names the version the package has
    assert f"## {ep.__version__}" in (ROOT / "CHANGELOG.md").read_text()


def test_the_license_file_is_the_one_pyproject_declares():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(out), str(ROOT)],
        check=True,
    )  # fmt: skip
    (path,) = out.glob("eqx_eqprop-*.whl")
    return path


@pytest.mark.slow
def test_a_wheel_installs_in_a_fresh_environment_and_works_from_another_directory(wheel, tmp_path):
    names = zipfile.ZipFile(wheel).namelist()
    presets = {Path(n).stem for n in names if n.startswith("eqx_eqprop/presets/")}
    assert presets == set(ep.preset_names())
    assert "eqx_eqprop/py.typed" in names
    assert any(n.endswith("licenses/LICENSE") for n in names)
    assert not any(n.startswith(("tests/", "docs/", "experiments/")) for n in names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "-q", str(wheel)], check=True)
    work = tmp_path / "elsewhere"
    work.mkdir()

    def run(*args):
        return subprocess.run(
            args, cwd=work, capture_output=True, text=True, check=True, timeout=900
        ).stdout

    # the installed package is the wheel's, not this checkout
    where = run(python, "-c", "import eqx_eqprop; print(eqx_eqprop.__file__)")
    assert str(venv) in where and str(ROOT) not in where
    listed = run(venv / "bin" / "eqprop-train", "--list-presets")
    assert all(name in listed for name in ep.preset_names())
    out = run(
        venv / "bin" / "eqprop-train", "--preset", "digits-hep", "--epochs", "1",
        "--out", "runs/wheel", "--no-progress",
    )  # fmt: skip
    assert (work / "runs/wheel/metrics.jsonl").is_file(), out
    readme = (ROOT / "README.md").read_text()
    example = re.search(r"```python\n(.*?)```", readme, re.DOTALL)
    assert example is not None
    (work / "example.py").write_text(example.group(1))
    run(python, "example.py")
