#!/usr/bin/env python3
"""Set up and run Endoshare on a fresh machine that has only Python 3.11+ and pip.

    python3 dev.py demo    # virtualenv + install + generate a sample case + process it
    python3 dev.py test    # virtualenv + install with test extras + run the whole test suite

The virtual environment lives in .venv beside this file; it is (re)installed only when
pyproject.toml changed since the last install.  Standard library only: this runs before anything
is installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"
EXTRAS = {"demo": "", "test": "[test,gui,oobnet-reference]"}
#: Debian packages the browser playback and GUI tests need (installed only when run as root with apt).
TEST_SYSTEM_PACKAGES = ("chromium", "libegl1", "libgl1", "libfontconfig1", "libxkbcommon0", "libglib2.0-0",
                        "libdbus-1-3", "fonts-dejavu-core")


def run(*command: str | Path, **kwargs: object) -> None:
    print("+", " ".join(str(c) for c in command), flush=True)
    subprocess.run([str(c) for c in command], check=True, cwd=ROOT, **kwargs)  # type: ignore[call-overload]


def ensure_environment(extras: str) -> None:
    if sys.version_info < (3, 11):
        sys.exit(f"Endoshare needs Python 3.11 or newer; this is {sys.version.split()[0]}.")
    if not PYTHON.exists():
        print(f"Creating a virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    stamp = VENV / f".installed{extras.replace(',', '-') or '-base'}"
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + extras.encode()).hexdigest()
    if stamp.exists() and stamp.read_text() == wanted:
        return
    run(PYTHON, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    run(PYTHON, "-m", "pip", "install", "--quiet", "-e", f".{extras}")
    stamp.write_text(wanted)


def demo() -> None:
    ensure_environment(EXTRAS["demo"])
    work = ROOT / "demo-output"
    shutil.rmtree(work, ignore_errors=True)
    endoshare = VENV / "bin" / "endoshare"
    run(endoshare, "sample", work / "input")
    case = next(p for p in (work / "input").iterdir() if p.is_dir())
    run(endoshare, "process", case, "--out", work / "shared", "--archive", work / "archive",
        "--detector", "builtin")
    print("\nDone. Shared (de-identified) output and its audit report:")
    for path in sorted((work / "shared").iterdir()):
        print(f"  {path}")
    report = json.loads(next((work / "shared").glob("*.report.json")).read_text(encoding="utf-8"))
    truth = json.loads((work / "input" / "truth.json").read_text(encoding="utf-8"))["labels"]
    spans = [(s["start_frame"], s["end_frame"]) for s in report["redaction"]["spans"]]
    oob = [i for i, label in enumerate(truth) if label == "oob"]
    found = sum(1 for i in oob if any(a <= i < b for a, b in spans))
    print(f"Redacted {report['redaction']['frames']} of {report['merged_timeline']['frames']} frames in "
          f"{len(spans)} spans ({report['output']['method']}); planted out-of-body frames covered: "
          f"{found}/{len(oob)}")
    print("Checks: " + ", ".join(f"{c['name']} {'ok' if c['passed'] else 'FAILED'}" for c in report["checks"]))
    print(f"Private mapping (patient ID → pseudonym): {work / 'archive' / 'mapping.csv'}")
    print(f"Inspect the result:  {endoshare} inspect {work / 'shared'}/*.mp4")


def ensure_system_packages(packages: tuple[str, ...]) -> None:
    """apt-get install what is missing, when we may (root on Debian/Ubuntu); otherwise say what is skipped."""
    missing = [p for p in packages
               if subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True)
               .stdout.strip() != "install ok installed"] if shutil.which("dpkg-query") else list(packages)
    if not missing:
        return
    if shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run("apt-get", "update", "-qq", env=env)
        run("apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing, env=env,
            stdout=subprocess.DEVNULL)
    else:
        print(f"Not installing {', '.join(missing)} (needs root and apt-get): the browser and GUI tests that "
              "need them will be skipped.", flush=True)


def test(pytest_args: list[str]) -> int:
    ensure_system_packages(TEST_SYSTEM_PACKAGES)
    ensure_environment(EXTRAS["test"])
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([str(PYTHON), "-m", "pytest", *pytest_args], cwd=ROOT, env=env).returncode


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in ("demo", "test"):
        print(__doc__)
        return 2
    if sys.argv[1] == "demo":
        demo()
        return 0
    return test(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
