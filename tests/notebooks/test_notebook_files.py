"""The tutorials as committed: numbered, listed in the docs, saved from one clean run, with outputs that
read well on a code host and leak nothing (tokens, ports, temporary paths).

Executing them is nbval's job (``notebooks/conftest.py``); these checks need no server.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
EXPECTED = ["01-connect-and-login.ipynb", "02-clinical-data-into-pandas.ipynb", "03-imaging.ipynb",
            "04-cohort-analysis.ipynb", "05-connectathon.ipynb"]

#: a loopback address with a port (ports change on every run), a temporary or checkout path
LEAKS = {
    "port": re.compile(r"(127\.0\.0\.1|localhost|\[::1\]):\d+"),
    "temporary path": re.compile(r"/tmp/|/var/folders/|s4s-notebooks-"),
    "checkout path": re.compile(re.escape(str(ROOT))),
    "home path": re.compile(r"(?<![\w.])/(home|root|Users)/"),
    "bearer token": re.compile(r"Bearer\s+[A-Za-z0-9._~+/-]{16,}"),
    "token field": re.compile(
        r"(access_token|refresh_token|id_token|client_secret)[\"']?\s*[:=]\s*[\"']?\w{8,}"),
}
#: what an opaque token looks like (urlsafe random, mixed case and digits, long), DICOM UIDs are not
WIDGET_REFERENCE = re.compile(r"IPY_MODEL_[0-9a-f]{32}")  # ipywidgets' references between saved models
TOKEN_LIKE = re.compile(r"(?<![\w.-])(?=[\w-]*[a-z])(?=[\w-]*[A-Z])(?=[\w-]*\d)[\w-]{32,}(?![\w.-])")


def load(name: str) -> Any:
    return nbformat.read(NOTEBOOKS / name, as_version=4)


def output_texts(notebook: Any) -> list[str]:
    """Every textual output (streams, text/plain, text/html, errors) and the saved widget state."""
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                texts.append(output.get("text", ""))
            for mime, value in output.get("data", {}).items():
                if not mime.startswith("image/"):
                    texts.append(value if isinstance(value, str) else json.dumps(value))
            texts.extend(output.get("traceback", []))
    texts.append(json.dumps(notebook.metadata.get("widgets", {})))
    return texts


def test_tutorials_are_numbered_and_listed_in_the_docs() -> None:
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == EXPECTED
    docs = (ROOT / "docs" / "tutorials.md").read_text()
    for name in EXPECTED:
        assert name in docs, f"docs/tutorials.md does not mention {name}"


def test_the_test_command_runs_the_notebooks_under_nbval() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "notebooks" in config["testpaths"]
    assert "--nbval-lax" in config["addopts"].split()
    assert "--nbval-current-env" in config["addopts"].split()  # kernels on the project's interpreter


@pytest.mark.parametrize("name", EXPECTED)
def test_saved_from_one_clean_run(name: str) -> None:
    notebook = load(name)
    nbformat.validate(notebook)
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1)), \
        "execute the notebook top to bottom in a fresh kernel before committing it"
    outputs = [output for cell in code for output in cell.outputs]
    assert outputs, "committed without outputs"
    assert not [o for o in outputs if o.output_type == "error"]
    assert not [o for o in outputs if o.output_type == "stream" and o.name == "stderr"]


@pytest.mark.parametrize("name", EXPECTED)
def test_some_outputs_are_checked_by_nbval(name: str) -> None:
    checked = [cell for cell in load(name).cells
               if "nbval-check-output" in cell.get("metadata", {}).get("tags", [])]
    assert checked, "tag the cells with deterministic output 'nbval-check-output'"
    assert all(cell.outputs for cell in checked)


@pytest.mark.parametrize("name", EXPECTED)
def test_outputs_leak_no_tokens_ports_or_paths(name: str) -> None:
    text = "\n".join(output_texts(load(name)))
    for what, pattern in LEAKS.items():
        match = pattern.search(text)
        assert match is None, f"{what} in the outputs: {match.group(0)[:40]!r}"
    match = TOKEN_LIKE.search(WIDGET_REFERENCE.sub("", text))
    assert match is None, f"something token-like in the outputs: {match.group(0)[:12]!r}..."


@pytest.mark.parametrize("name", EXPECTED)
def test_each_notebook_finds_the_stack_the_documented_way(name: str) -> None:
    source = "\n".join(cell.source for cell in load(name).cells if cell.cell_type == "code")
    assert 'os.environ.get("S4S_URLS_FILE", "../demo-data/urls.json")' in source


def test_leak_patterns_catch_what_they_are_for() -> None:
    """The patterns above are the whole check: make sure they match what they must, and not UIDs."""
    assert LEAKS["port"].search("http://127.0.0.1:41335/dicom-web")
    assert LEAKS["home path"].search("'/home/ana/.local/share/jupyter/s4s_jupyter/tokens.json'")
    assert LEAKS["bearer token"].search("Authorization: Bearer kY3n0pQ_rT5vW8xZ1aB4cD6eF9gH2iJ")
    assert TOKEN_LIKE.search("token kY3n0pQ_rT5vW8xZ1aB4cD6eF9gH2iJ7kL0mN")
    assert not TOKEN_LIKE.search("1.2.826.0.1.3680043.8.498.18288749914519244662210399895279707201")
    assert not TOKEN_LIKE.search("139ff45acff2459ab4a1917a861a0b21")  # a widget model id (hex)
    assert not TOKEN_LIKE.search(WIDGET_REFERENCE.sub("", '"IPY_MODEL_5813ba44d1d34647b04270447960fe51"'))
