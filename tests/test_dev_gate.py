"""``python3 dev.py test`` (and so ``.ci/run``) fails on a lint or a type error, with the project's settings."""

from __future__ import annotations

import importlib.util
import os
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_dev() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dev_script", ROOT / "dev.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tiny project with this repository's [tool.ruff] and [tool.mypy] settings, where dev.py looks."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]
    lines = [f"[tool.ruff]\nline-length = {config['ruff']['line-length']}\ntarget-version = \"py311\"",
             f"[tool.ruff.lint]\nselect = {config['ruff']['lint']['select']!r}",
             "[tool.mypy]\n" + "\n".join(f"{key} = {str(value).lower() if isinstance(value, bool) else repr(value)}"
                                         for key, value in config["mypy"].items()
                                         if key not in ("overrides", "mypy_path"))]
    (tmp_path / "pyproject.toml").write_text("\n\n".join(lines).replace("'", '"') + "\n", encoding="utf-8")
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    (tmp_path / "src" / "pkg" / "__init__.py").write_text("")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(project: Path, code: str) -> None:
    (project / "src" / "pkg" / "mod.py").write_text(code, encoding="utf-8")


def test_static_checks_fail_on_lint_and_type_errors(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dev = load_dev()
    dev.ROOT, dev.PYTHON = project, Path(sys.executable)
    env = {**os.environ}
    write(project, "def double(x: int) -> int:\n    return x * 2\n")
    assert dev.static_checks(env) == []
    # A name re-bound to another type: the kind of error the gate is for (frames: str, then a list).
    write(project, "def frames(spec: str) -> int:\n    frames = spec\n    frames = [1, 2]\n    return len(frames)\n")
    assert dev.static_checks(env) == ["mypy (types)"]
    write(project, "import os\n\n\ndef double(x: int) -> int:\n    return x * 2\n")     # unused import
    assert dev.static_checks(env) == ["ruff (lint)"]
    capsys.readouterr()
