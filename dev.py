#!/usr/bin/env python3
"""Set up and run Endoshare on a fresh machine that has only Python 3.11+ and pip.

    python3 dev.py demo    # virtualenv + install + generate a sample case + process it
    python3 dev.py test    # virtualenv + install with test extras + (re)build the bundle when missing or
                           # stale + lint (ruff) + types (mypy) + the whole test suite
    python3 dev.py test --fast   # the quick loop: lint and types, no bundle, tests marked slow left out
    python3 dev.py bundle  # the self-contained app: dist/Endoshare/ and its archive (PyInstaller)

The virtual environment lives in .venv beside this file; it is (re)installed only when
pyproject.toml changed since the last install.  The bundle is built in its own environment,
.bundle-venv, holding only the runtime dependencies, the gui extra and PyInstaller (no test
extras).  Standard library only: this runs before anything is installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"
BUNDLE_VENV = ROOT / ".bundle-venv"
BUNDLE_PYTHON = BUNDLE_VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
#: What the bundle environment holds besides endoshare and its gui extra: the bundler and its hooks.
BUNDLER = ("pyinstaller>=6.10,<7", "pyinstaller-hooks-contrib>=2024.8",
           "pillow; sys_platform == 'darwin'")   # PyInstaller makes the macOS .icns from the PNG with it
#: Libraries Qt's X11 plugin links that a desktop may lack: installed here (as root with apt) so that
#: PyInstaller copies them into the bundle.
BUNDLE_SYSTEM_PACKAGES = ("libxcb-icccm4", "libxcb-keysyms1", "libxcb-cursor0", "libxkbcommon-x11-0")
DIST = ROOT / "dist"
BUNDLE_DIR = DIST / "Endoshare"
#: Development data that must never end up in a bundle (checked file by file, by content).
DEVELOPMENT_DATA = (ROOT.parent / "shared" / "data", Path("/work/shared/data"))
EXTRAS = {"demo": "", "test": "[test,gui,oobnet-reference]"}
#: Debian packages the browser playback and GUI tests need (installed only when run as root with apt).
TEST_SYSTEM_PACKAGES = ("chromium", "libegl1", "libgl1", "libfontconfig1", "libxkbcommon0", "libglib2.0-0",
                        "libdbus-1-3", "fonts-dejavu-core",
                        "xvfb", "desktop-file-utils")   # the bundled GUI on a real X display, its menu entry


def run(*command: str | Path, **kwargs: object) -> None:
    print("+", " ".join(str(c) for c in command), flush=True)
    subprocess.run([str(c) for c in command], check=True, cwd=ROOT, **kwargs)  # type: ignore[call-overload]


def ensure_environment(extras: str, where: Path = VENV, python: Path = PYTHON, editable: bool = True,
                       also: tuple[str, ...] = ()) -> None:
    if sys.version_info < (3, 11):
        sys.exit(f"Endoshare needs Python 3.11 or newer; this is {sys.version.split()[0]}.")
    if not python.exists():
        print(f"Creating a virtual environment in {where}", flush=True)
        venv.EnvBuilder(with_pip=True).create(where)
    stamp = where / f".installed{extras.replace(',', '-') or '-base'}"
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + extras.encode()
                            + " ".join(also).encode()).hexdigest()
    if stamp.exists() and stamp.read_text() == wanted:
        return
    run(python, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    run(python, "-m", "pip", "install", "--quiet", *(["-e"] if editable else []), f".{extras}", *also)
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


def ensure_system_packages(packages: tuple[str, ...], without: str = "the browser and GUI tests that need them "
                           "will be skipped") -> None:
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
        print(f"Not installing {', '.join(missing)} (needs root and apt-get): {without}.", flush=True)


#: The engineering gate that runs before the tests, each configured in pyproject.toml ([tool.ruff], [tool.mypy]).
STATIC_CHECKS = {"ruff (lint)": ("ruff", "check", "--no-cache", "."), "mypy (types)": ("mypy",)}


def static_checks(env: dict[str, str]) -> list[str]:
    """Run the linter and the type checker; the names of those that reported a finding."""
    failed = []
    for name, (tool, *args) in STATIC_CHECKS.items():
        print(f"+ {tool} {' '.join(args)}", flush=True)
        if subprocess.run([str(PYTHON), "-m", tool, *args], cwd=ROOT, env=env).returncode != 0:
            failed.append(name)
    return failed


#: What a bundle is built from: when any of it changed since the last build, the bundle is stale.
BUNDLE_INPUTS = ("src", "packaging", "pyproject.toml", "dev.py", "LICENSE")
BUNDLE_STAMP = DIST / ".bundle-inputs"


def bundle_inputs_digest() -> str:
    """SHA-256 over the names and contents of every file the bundle is built from (caches left out)."""
    digest = hashlib.sha256()
    for name in BUNDLE_INPUTS:
        top = ROOT / name
        for path in sorted(top.rglob("*")) if top.is_dir() else [top]:
            if (path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
                    and not any(part.endswith(".egg-info") for part in path.parts)):
                digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def bundle_is_current() -> bool:
    """True when dist/ holds an archive built from the current sources (see :func:`bundle`'s stamp)."""
    archives = list(DIST.glob(f"Endoshare-*-{platform_tag()}.tar.gz"))
    return bool(archives) and BUNDLE_STAMP.is_file() and BUNDLE_STAMP.read_text() == bundle_inputs_digest()


def selects_bundle_tests(pytest_args: list[str]) -> bool:
    """True unless the arguments name test paths, none of which holds the bundle tests."""
    paths = [a.split("::")[0] for a in pytest_args if not a.startswith("-") and (ROOT / a.split("::")[0]).exists()]
    return not paths or any(Path(ROOT / p).resolve() in (ROOT / "tests", ROOT / "tests" / "test_bundle.py")
                            for p in paths)


def test(pytest_args: list[str]) -> int:
    """Lint (ruff) and type-check (mypy), then run pytest in .venv: all three even when one fails, so that
    one run shows every problem; non-zero when any of them failed.  ``--fast`` leaves out the tests marked
    slow and never builds the bundle; otherwise, on Linux, the bundle is (re)built first when missing or
    stale and its tests are selected, so that they run instead of skipping."""
    fast = "--fast" in pytest_args
    pytest_args = [a for a in pytest_args if a != "--fast"]
    ensure_system_packages(TEST_SYSTEM_PACKAGES)
    if fast:
        pytest_args = ["-m", "not slow", *pytest_args]
    elif sys.platform.startswith("linux") and selects_bundle_tests(pytest_args) and not bundle_is_current():
        print("The bundle in dist/ is missing or older than the sources: building it first (dev.py bundle).",
              flush=True)
        bundle()
    ensure_environment(EXTRAS["test"])
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    failed = static_checks(env)
    tests = subprocess.run([str(PYTHON), "-m", "pytest", *pytest_args], cwd=ROOT, env=env).returncode
    if failed:
        print(f"\ndev.py test: FAILED: {' and '.join(failed)} reported the findings listed above"
              f"{' (the tests passed)' if tests == 0 else ''}.  Fix them: 'ruff check --fix' repairs import "
              "order and old syntax; mypy's errors need a real fix, or '# type: ignore[code]' with the reason "
              "where a library's typing is wrong.", file=sys.stderr, flush=True)
        return tests or 1
    return tests


def platform_tag() -> str:
    system = {"linux": "linux", "darwin": "macos", "win32": "windows"}.get(sys.platform, sys.platform)
    machine = platform.machine().lower().replace("amd64", "x86_64").replace("arm64", "aarch64")
    return f"{system}-{machine}"


def development_data_in(folder: Path) -> list[str]:
    """Files under ``folder`` whose content equals a file of the development data (compared by SHA-256)."""
    def digest(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    data_by_size: dict[int, list[Path]] = {}
    for data in DEVELOPMENT_DATA:
        for path in data.rglob("*") if data.is_dir() else ():
            if path.is_file():
                data_by_size.setdefault(path.stat().st_size, []).append(path)
    data_digests: dict[Path, str] = {}
    found = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.is_symlink() or path.stat().st_size not in data_by_size:
            continue
        mine = digest(path)
        for candidate in data_by_size[path.stat().st_size]:
            if data_digests.setdefault(candidate, digest(candidate)) == mine:
                found.append(f"{path.relative_to(folder)} (= {candidate})")
                break
    return found


def write_archive(source: Path, archive: Path) -> None:
    """The bundle folder as one archive whose single top folder is ``Endoshare/`` (modes and links kept)."""
    temp = archive.with_name(archive.name + ".part")
    if archive.suffix == ".zip":
        with zipfile.ZipFile(temp, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(source.rglob("*")):
                zf.write(path, Path(source.name) / path.relative_to(source))
    else:
        with tarfile.open(temp, "w:gz", compresslevel=6) as tf:
            tf.add(source, arcname=source.name)
    temp.replace(archive)


#: What the .deb needs from the system (see README: what the bundle still takes from the system).
DEB_DEPENDS = ("libc6 (>= 2.36), libxcb1, libgl1, libegl1, libdrm2, fontconfig-config, "
               "fonts-dejavu-core | fonts-freefont-ttf")


def write_deb(source: Path, version: str) -> Path | None:
    """A Debian package of the bundle: the folder in /opt/endoshare, the commands in /usr/bin, the menu
    entry and icons in /usr/share.  Only where dpkg-deb exists (it needs nothing else: no Docker)."""
    if not shutil.which("dpkg-deb") or not sys.platform.startswith("linux"):
        return None
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()
    stage = ROOT / "build" / "deb"
    shutil.rmtree(stage, ignore_errors=True)
    shutil.copytree(source, stage / "opt" / "endoshare", symlinks=True, copy_function=os.link)
    (stage / "usr" / "bin").mkdir(parents=True)
    for name in ("endoshare", "endoshare-gui"):    # relative links: valid installed and extracted alike
        (stage / "usr" / "bin" / name).symlink_to(Path("..", "..", "opt", "endoshare", name))
    icons = ROOT / "build" / "bundle-icons"
    for src, dest in ((ROOT / "packaging" / "endoshare.desktop", "usr/share/applications/endoshare.desktop"),
                      (icons / "endoshare.png", "usr/share/icons/hicolor/256x256/apps/endoshare.png"),
                      (icons / "endoshare.svg", "usr/share/icons/hicolor/scalable/apps/endoshare.svg"),
                      (ROOT / "LICENSE", "usr/share/doc/endoshare/copyright")):
        (stage / dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, stage / dest)
    size_kib = sum(p.stat().st_size for p in stage.rglob("*") if p.is_file() and not p.is_symlink()) // 1024
    (stage / "DEBIAN").mkdir()
    (stage / "DEBIAN" / "control").write_text(
        f"Package: endoshare\nVersion: {version}\nArchitecture: {arch}\nMaintainer: Endoshare developers\n"
        f"Installed-Size: {size_kib}\nDepends: {DEB_DEPENDS}\nSection: video\nPriority: optional\n"
        "Description: de-identify surgical videos (self-contained desktop app)\n"
        " Merges a case's clips, redacts out-of-body scenes, strips metadata, pseudonymises and verifies.\n"
        " Python, FFmpeg, Qt and the detector models are inside /opt/endoshare.\n", encoding="utf-8")
    deb = DIST / f"endoshare_{version}_{arch}.deb"
    run("dpkg-deb", "--root-owner-group", "-Zzstd", "-z3", "--build", stage, deb, stdout=subprocess.DEVNULL)
    shutil.rmtree(stage, ignore_errors=True)
    return deb


def bundle() -> Path:
    """Build dist/Endoshare/ with PyInstaller in .bundle-venv, check it, and archive it; return the archive."""
    started = time.monotonic()
    inputs = bundle_inputs_digest()
    if sys.platform.startswith("linux"):
        ensure_system_packages(BUNDLE_SYSTEM_PACKAGES, "the bundle will need them on the user's machine")
    ensure_environment("[gui]", BUNDLE_VENV, BUNDLE_PYTHON, editable=False, also=BUNDLER)
    # The spec analyses the working tree's src/ (its pathex); the installed copy gives the metadata.
    env = {**os.environ, "PYTHONNOUSERSITE": "1", "ENDOSHARE_ICON_DIR": str(ROOT / "build" / "bundle-icons"),
           "QT_QPA_PLATFORM": "offscreen"}
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    run(BUNDLE_PYTHON, ROOT / "packaging" / "make_icons.py", env["ENDOSHARE_ICON_DIR"],
        env={**env, "PYTHONPATH": str(ROOT / "src")})
    shutil.rmtree(BUNDLE_DIR, ignore_errors=True)
    shutil.rmtree(DIST / "Endoshare.app", ignore_errors=True)
    run(BUNDLE_PYTHON, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN", "--distpath", DIST,
        "--workpath", ROOT / "build" / "pyinstaller", ROOT / "packaging" / "endoshare.spec", env=env)
    # Desktop integration and the user's notes, beside the executables.
    for name in ("endoshare.desktop", "install-desktop-entry.sh", "README.txt"):
        shutil.copy2(ROOT / "packaging" / name, BUNDLE_DIR / name)
    shutil.copy2(Path(env["ENDOSHARE_ICON_DIR"]) / "endoshare.png", BUNDLE_DIR / "endoshare.png")
    shutil.copy2(ROOT / "LICENSE", BUNDLE_DIR / "LICENSE.txt")
    leaked = development_data_in(BUNDLE_DIR)
    if leaked:
        sys.exit("The bundle holds development data; remove it from the package and build again:\n  "
                 + "\n  ".join(leaked))
    version = json.loads(subprocess.run([str(BUNDLE_PYTHON), "-c", "import json, endoshare; "
                                         "print(json.dumps(endoshare.__version__))"], env=env, check=True,
                                        capture_output=True, text=True).stdout)
    archive = DIST / f"Endoshare-{version}-{platform_tag()}{'.zip' if os.name == 'nt' else '.tar.gz'}"
    mac_app = DIST / "Endoshare.app"     # on macOS users get the .app; the plain folder stays for tests
    write_archive(mac_app if sys.platform == "darwin" and mac_app.is_dir() else BUNDLE_DIR, archive)
    deb = write_deb(BUNDLE_DIR, version)
    BUNDLE_STAMP.write_text(inputs)      # what this bundle was built from (dev.py test rebuilds when it differs)
    size = sum(p.stat().st_size for p in BUNDLE_DIR.rglob("*") if p.is_file() and not p.is_symlink())
    print(f"Built {BUNDLE_DIR} ({size / 2**20:.0f} MiB), {archive} ({archive.stat().st_size / 2**20:.0f} MiB)"
          + (f" and {deb} ({deb.stat().st_size / 2**20:.0f} MiB)" if deb else "")
          + f" in {time.monotonic() - started:.0f} s.", flush=True)
    return archive


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in ("demo", "test", "bundle"):
        print(__doc__)
        return 2
    if sys.argv[1] == "demo":
        demo()
        return 0
    if sys.argv[1] == "bundle":
        bundle()
        return 0
    return test(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
