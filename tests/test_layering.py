"""The layers import downwards only: media/ (reading, writing, scrubbing media) knows nothing of what is built
on it (rendering, checking, detection, the pipeline, the queue, the shells)."""

from __future__ import annotations

import ast
from pathlib import Path

import endoshare

PACKAGE = Path(endoshare.__file__).resolve().parent
#: What lies above media/ (the checker follows render/, so it and its packet proof live outside media/).
ABOVE_MEDIA = ("render", "verify", "packet_identity", "detect", "overlay", "pipeline", "jobs", "cli", "gui",
               "report", "identity")


def imported_modules(path: Path) -> set[str]:
    """The endoshare modules that ``path`` imports, as dotted names relative to the package."""
    names = set()
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts[:len(parts) - node.level]
                module = ".".join((*base, *(node.module.split(".") if node.module else ())))
            elif node.module and node.module.startswith("endoshare."):
                module = node.module.removeprefix("endoshare.")
            else:
                continue
            names.add(module)
            names.update(f"{module}.{alias.name}".lstrip(".") for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name.removeprefix("endoshare.") for a in node.names if a.name.startswith("endoshare."))
    return names


def test_media_imports_nothing_built_on_it() -> None:
    offences = {f"{path.relative_to(PACKAGE)} imports {name}"
                for path in sorted((PACKAGE / "media").glob("*.py"))
                for name in imported_modules(path)
                if name.split(".")[0] in ABOVE_MEDIA}
    assert not offences, sorted(offences)


def test_the_import_reader_sees_relative_imports() -> None:
    """The check above can fail: a module of the checker does import render/."""
    assert "render.common" in imported_modules(PACKAGE / "verify.py")
    assert "render.common" in imported_modules(PACKAGE / "packet_identity.py")
