"""The README's code example runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # noqa: S102
    info = namespace["info"]
    assert float(info.error_estimate) < 0.05
    assert namespace["truth"].layers[0].weight.shape == (256, 784)


def test_readme_commands_are_the_ci_commands():
    text = README.read_text()
    ci = (README.parent / ".ci" / "run").read_text()
    assert 'pip install -e ".[dev]"' in text and "eqprop-train" in text
    test_command = re.search(r"^python -m pytest$", text, flags=re.M)
    assert test_command and "python -m pytest" in ci
