"""The public API: what ``from endoshare import …`` offers, and the README's example run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import endoshare
from endoshare.pipeline import CaseStatus
from media import barcode_clip, mapping_rows

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    """The first Python block of the README's "Python library" section."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Python library\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert match, "the README's Python library section has no python example"
    return match.group(1)


def test_every_exported_name_resolves_and_importing_is_cheap() -> None:
    assert endoshare.__all__ == ["__version__", *sorted(set(endoshare.__all__) - {"__version__"})]
    # A fresh interpreter: importing the package loads no heavy module until a name is used.
    code = ("import sys, endoshare; assert 'endoshare.pipeline' not in sys.modules, 'eager'; "
            "import endoshare as e; names = [n for n in e.__all__ if getattr(e, n) is None]; "
            "assert not names, names; print(len(e.__all__))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == len(endoshare.__all__)
    with pytest.raises(AttributeError, match="no attribute 'process_cases_fast'"):
        endoshare.process_cases_fast  # noqa: B018  (the attribute access is the test)
    # The errors are the documented tree's classes, not copies.
    from endoshare import errors
    assert endoshare.OptionsError is errors.OptionsError and issubclass(endoshare.OptionsError, ValueError)


def test_readme_example_runs_on_a_generated_case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    case = tmp_path / "cases" / "P001"
    case.mkdir(parents=True)
    barcode_clip(case / "VID001.mp4", range(0, 40))
    barcode_clip(case / "VID002.mp4", range(40, 80))
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "readme_example"}
    exec(compile(readme_example(), str(README), "exec"), namespace)   # our own README
    result = namespace["result"]
    assert isinstance(result, endoshare.CaseResult) and result.status is CaseStatus.OK
    assert result.output == (tmp_path / "shared" / f"{result.pseudonym}.mp4").resolve()
    assert result.output.is_file() and result.report is not None and result.report.is_file()
    assert sorted(p.name for p in (tmp_path / "shared").iterdir()) == sorted(
        [result.output.name, result.report.name])
    assert [row["pseudonym"] for row in mapping_rows(tmp_path / "archive")] == [result.pseudonym]
    printed = capsys.readouterr().out.splitlines()
    spans = namespace["spans"]
    assert isinstance(spans, endoshare.SegmentSet) and printed[1] == str(spans.to_json())
    assert printed[-1].startswith(f"ok {result.pseudonym} ")
