"""The layers import one way, top to bottom:

    services/             the hosts: HTTP apps, each with its sidecar
    actors/, workflows/   what the forecaster hosts: DeviceActor, the workflows and their activities
    clients/              what those share: the sidecar client, the model catalog, the weather
                          input, the fleet list, the audit pool, metrics, tracing, secrets
    intraday/             the domain: forecasting, telemetry, trading, audit; no Dapr, no HTTP app

A test over every module's imports (its syntax tree, so a function's
local import counts too): it fails, naming the file, line and import, when
an arrow runs back up."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# package -> the top-level modules its code may not import
FORBIDDEN = {
    "intraday": {"services", "actors", "workflows", "clients", "dapr", "fastapi", "starlette", "uvicorn"},
    "clients": {"services", "actors", "workflows"},
    "actors": {"services", "workflows"},
    "workflows": {"services", "actors"},
}


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def arrows_up(package: str) -> list[str]:
    return [f"{path.relative_to(ROOT)}:{line} imports {module}"
            for path in sorted((ROOT / package).rglob("*.py"))
            for line, module in imports(path)
            if module.split(".")[0] in FORBIDDEN[package]]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_arrow_runs_back_up(package):
    assert (ROOT / package).is_dir()
    assert arrows_up(package) == []


def test_the_check_sees_an_arrow_up(tmp_path, monkeypatch):
    """The check itself: a module of the domain importing a service, a
    clients module importing an actor, both inside functions, are found."""
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "intraday").mkdir()
    (tmp_path / "intraday" / "bad.py").write_text("def f():\n    from clients.sidecar import invoke\n")
    (tmp_path / "clients").mkdir()
    (tmp_path / "clients" / "bad.py").write_text("import os\n\n\ndef g():\n    import actors.device_actor\n")
    assert arrows_up("intraday") == ["intraday/bad.py:2 imports clients.sidecar"]
    assert arrows_up("clients") == ["clients/bad.py:5 imports actors.device_actor"]


# Small rooms: a module the next engineer can read in one sitting.
MAX_LINES = 600


def python_files() -> list[Path]:
    """Every Python file of the project (not the data directory's or the venv's)."""
    return sorted(p for top in ROOT.iterdir() if top.is_dir() and not top.name.startswith(".")
                  for p in top.rglob("*.py"))


def test_no_python_file_is_over_600_lines():
    too_long = {str(p.relative_to(ROOT)): n for p in python_files()
                if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not too_long, f"split these by what they do (at most {MAX_LINES} lines each): {too_long}"
