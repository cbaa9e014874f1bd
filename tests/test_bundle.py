"""The self-contained Linux app, tested as a user gets it.

The archive made by ``python3 dev.py bundle`` is extracted into an empty folder and its programs run with a
clean environment (as ``env -i PATH=/usr/bin:/bin HOME=...``: no virtualenv, no project on the path, the
working directory outside the project).  Slow.  Without a built archive the tests are skipped, except when
``CI=true`` (the archive must then exist: ``.ci/run`` builds it first) or ``ENDOSHARE_TEST_BUNDLE=1`` (the
archive is built here if missing).  ``ENDOSHARE_BUNDLE_ARCHIVE`` names another archive to test.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the Linux bundle is tested on Linux")]

ROOT = Path(__file__).resolve().parents[1]
DIST = ROOT / "dist"
#: The development data that must never be inside a bundle (the same places dev.py checks).
DEVELOPMENT_DATA = (ROOT.parent / "shared" / "data", Path("/work/shared/data"))
CLEAN_PATH = "/usr/bin:/bin"
GUI_START_TIMEOUT_S = 120
#: How long the GUI must stay up once its window is shown.
GUI_STAYS_UP_S = 4
#: Distributions that are test-only and must not ship.
TEST_ONLY = ("tensorflow", "tf_keras", "keras", "playwright", "pytest", "_pytest", "pytestqt", "imageio_ffmpeg")


def _asked() -> bool:
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("ENDOSHARE_TEST_BUNDLE") == "1"


def _archive() -> Path | None:
    named = os.environ.get("ENDOSHARE_BUNDLE_ARCHIVE")
    if named:
        return Path(named)
    found = sorted(DIST.glob("Endoshare-*-linux-*.tar.gz"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


@pytest.fixture(scope="module")
def archive() -> Path:
    path = _archive()
    if path is None or not path.is_file():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but no bundle archive in dist/: .ci/run must run `python3 dev.py bundle` first")
        if not _asked():
            pytest.skip("no bundle archive in dist/ (build it with `python3 dev.py bundle`, or set "
                        "ENDOSHARE_TEST_BUNDLE=1 to build it here)")
        subprocess.run([sys.executable, str(ROOT / "dev.py"), "bundle"], check=True, cwd=ROOT)
        path = _archive()
        assert path is not None and path.is_file(), "dev.py bundle made no archive"
    return path


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty folder outside the project, as a user's download folder."""
    return tmp_path_factory.mktemp("user folder")   # a space in every path the app gets


@pytest.fixture(scope="module")
def app(archive: Path, user_dir: Path) -> Path:
    """The archive extracted into an empty folder; returns its single top folder."""
    target = user_dir / "download"
    target.mkdir()
    with tarfile.open(archive) as tf:
        tf.extractall(target, filter="tar")
    tops = list(target.iterdir())
    assert [p.name for p in tops] == ["Endoshare"], f"the archive must hold one folder Endoshare/, not {tops}"
    return tops[0]


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    return {"PATH": CLEAN_PATH, "HOME": str(home), **extra}


def run_clean(app: Path, args: list[str | Path], home: Path, cwd: Path, timeout: float = 600) \
        -> subprocess.CompletedProcess[str]:
    command = [str(app / "endoshare"), *(str(a) for a in args)]
    result = subprocess.run(command, env=clean_env(home), cwd=cwd, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{command} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_equal_to_development_data(folder: Path, data_folders: tuple[Path, ...] = DEVELOPMENT_DATA) -> list[str]:
    """Files under ``folder`` whose content equals a file of ``data_folders`` (by size, then SHA-256)."""
    by_size: dict[int, list[Path]] = {}
    for data in data_folders:
        for path in data.rglob("*") if data.is_dir() else ():
            if path.is_file():
                by_size.setdefault(path.stat().st_size, []).append(path)
    found = []
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.stat().st_size in by_size:
            mine = digest(path)
            found += [f"{path} = {d}" for d in by_size[path.stat().st_size] if digest(d) == mine]
    return found


def test_layout_package_data_and_no_test_extras(app: Path) -> None:
    internal = app / "_internal"
    for name in ("endoshare", "endoshare-gui"):
        assert os.access(app / name, os.X_OK), f"{name} is missing or not executable"
    desktop = (app / "endoshare.desktop").read_text(encoding="utf-8").splitlines()
    assert desktop[0] == "[Desktop Entry]"
    assert {"Name=Endoshare", "Icon=endoshare", "Type=Application", "Terminal=false"} <= set(desktop)
    assert (app / "endoshare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if shutil.which("desktop-file-validate"):
        result = subprocess.run(["desktop-file-validate", str(app / "endoshare.desktop")], capture_output=True,
                                text=True)
        assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr
    # Every data file of the package, whatever it is (models added later included), is in the bundle.
    package = ROOT / "src" / "endoshare"
    data_files = [p for p in package.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")
                  and "__pycache__" not in p.parts]
    assert data_files, "the package has no data files: the detector model is missing from src/"
    for path in data_files:
        bundled = internal / "endoshare" / path.relative_to(package)
        assert bundled.is_file() and digest(bundled) == digest(path), \
            f"{path.relative_to(ROOT)} is not in the bundle as it is in the tree (rebuild: python3 dev.py bundle)"
    assert list((internal / "onnxruntime" / "capi").glob("libonnxruntime*.so*")), "onnxruntime's library is missing"
    assert list(internal.glob("PySide6/Qt/plugins/platforms/libqxcb.so")), "Qt's X11 platform plugin is missing"
    shipped = {p.name.split("-")[0].lower() for p in internal.iterdir()}
    assert not shipped & set(TEST_ONLY), f"test-only packages in the bundle: {shipped & set(TEST_ONLY)}"
    for component in ("Python", "FFmpeg", "Qt"):
        assert list((internal / "licenses" / component).iterdir()), f"{component}'s licence text is missing"
    assert list(internal.glob("av-*.dist-info/licenses/LICENSE*")), "PyAV's licence (Help screen) is missing"


#: Libraries the bundle may take from the user's system: the C library and the X11/OpenGL/Wayland client
#: libraries every graphical Linux desktop has (they must match the machine's drivers and display server).
SYSTEM_LIBRARIES = ("libc.so", "libm.so", "libdl.so", "libpthread.so", "librt.so", "libresolv.so", "libutil.so",
                    "ld-linux", "linux-vdso", "libxcb.so", "libGL.so", "libEGL.so", "libGLX.so", "libGLdispatch.so",
                    "libOpenGL.so", "libdrm.so", "libwayland-client.so", "libwayland-cursor.so", "libwayland-egl.so")


@pytest.mark.skipif(shutil.which("ldd") is None, reason="needs ldd")
def test_bundle_needs_only_desktop_system_libraries(app: Path) -> None:
    internal = app / "_internal"
    search = f"{internal}:{internal / 'PySide6' / 'Qt' / 'lib'}"
    outside: dict[str, str] = {}
    elf = [p for p in internal.rglob("*") if p.is_file() and not p.is_symlink() and ".so" in p.name]
    for path in elf + [app / "endoshare", app / "endoshare-gui"]:
        result = subprocess.run(["ldd", str(path)], env={"PATH": CLEAN_PATH, "LD_LIBRARY_PATH": search},
                                capture_output=True, text=True)
        for line in result.stdout.splitlines():
            name, _, where = line.strip().partition(" => ")
            if where.startswith(str(internal)) or line.strip().startswith(("/", "linux-vdso", "statically")):
                continue
            if not name.startswith(SYSTEM_LIBRARIES):
                outside[name] = f"{where.split(' (')[0]} (needed by {path.relative_to(app)})"
    assert outside == {}, f"the bundle needs system libraries a desktop may lack: {outside}"


def test_desktop_entry_installs_for_the_user(app: Path, tmp_path: Path) -> None:
    """install-desktop-entry.sh puts a menu entry that starts this folder's app, and --remove takes it out."""
    home = tmp_path / "home with space"
    env = clean_env(home)
    subprocess.run([str(app / "install-desktop-entry.sh")], env=env, check=True, capture_output=True)
    entry = home / ".local" / "share" / "applications" / "endoshare.desktop"
    assert f'Exec="{app / "endoshare-gui"}"' in entry.read_text(encoding="utf-8").splitlines()
    assert (home / ".local" / "share" / "icons" / "hicolor" / "256x256" / "apps" / "endoshare.png").is_file()
    if shutil.which("desktop-file-validate"):
        result = subprocess.run(["desktop-file-validate", str(entry)], capture_output=True, text=True)
        assert result.returncode == 0 and not result.stdout.strip(), result.stdout
    subprocess.run([str(app / "install-desktop-entry.sh"), "--remove"], env=env, check=True, capture_output=True)
    assert not entry.exists()


def test_bundle_holds_no_development_data_and_no_test_files(app: Path, tmp_path: Path) -> None:
    """Neither the development data (when this machine has it) nor any file of tests/ is in the bundle."""
    folders = (*(d for d in DEVELOPMENT_DATA if d.is_dir()), ROOT / "tests")
    data_files = sorted(p for d in folders for p in d.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    assert data_files
    # The check finds a planted copy (so that an empty result below means something).
    planted = tmp_path / "planted"
    planted.mkdir()
    shutil.copy(data_files[len(data_files) // 2], planted / "renamed.bin")
    assert files_equal_to_development_data(planted, folders)
    assert files_equal_to_development_data(app, folders) == []


def test_cli_processes_the_sample_case_verified_and_redacted(app: Path, user_dir: Path) -> None:
    home, work = user_dir / "home-cli", user_dir / "cli"
    work.mkdir()
    assert run_clean(app, ["--version"], home, work).stdout.strip().startswith("endoshare ")
    run_clean(app, ["sample", work / "input"], home, work)
    case = next(p for p in (work / "input").iterdir() if p.is_dir())
    truth = json.loads((work / "input" / "truth.json").read_text(encoding="utf-8"))["labels"]
    # One case runs in the program's own process; two cases go through the job queue's worker processes
    # (multiprocessing's fork server started from the frozen executable).
    second = work / "input" / "second case"
    shutil.copytree(case, second)
    runs = [([case], work / "one"), ([case, second], work / "two")]
    for cases, out in runs:
        result = run_clean(app, ["process", *cases, "--out", out / "shared", "--archive", out / "archive",
                                 "--detector", "builtin", "--json"], home, work)
        summary = json.loads(result.stdout.strip().splitlines()[-1])["cases"]
        assert [c["status"] for c in summary] == ["ok"] * len(cases), summary
        for entry in summary:
            report = json.loads(Path(entry["report"]).read_text(encoding="utf-8"))
            checks = {c["name"]: c["passed"] for c in report["checks"]}
            assert checks and all(checks.values()), checks
            assert {"decodes_cleanly", "redaction", "metadata_allow_list", "no_identifying_strings"} <= set(checks)
            spans = [(s["start_frame"], s["end_frame"]) for s in report["redaction"]["spans"]]
            oob = [i for i, label in enumerate(truth) if label == "oob"]
            assert oob and all(any(a <= i < b for a, b in spans) for i in oob), "an out-of-body frame is not redacted"
            output = Path(entry["output"])
            assert output.parent == out / "shared" and digest(output) == report["output"]["sha256"]
            assert case.name.encode() not in output.read_bytes()
    assert not (work / "one" / "shared" / "mapping.csv").exists()
    assert (work / "one" / "archive" / "mapping.csv").exists()


@pytest.fixture
def x_display(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A private X server (Xvfb), so that Qt's real X11 plugin (xcb) and its libraries are exercised."""
    if shutil.which("Xvfb") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but no Xvfb: dev.py test installs it (package xvfb)")
        pytest.skip("needs Xvfb (Debian package xvfb) to start the GUI on a real X display")
    read, write = os.pipe()
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
                              pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as pipe:
        number = pipe.readline().strip()
    try:
        assert number.isdigit(), "Xvfb did not report its display"
        yield f":{number}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def start_gui_and_close_it(app: Path, home: Path, cwd: Path, **display: str) -> float:
    """Start the bundled GUI; check it shows its window, stays up, and exits 0 on SIGTERM. Returns the
    seconds from start to the window shown."""
    log = home / ".local" / "state" / "endoshare" / "endoshare-gui.log"
    started = time.monotonic()
    process = subprocess.Popen([str(app / "endoshare-gui")], env=clean_env(home, **display), cwd=cwd,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        while time.monotonic() - started < GUI_START_TIMEOUT_S:
            if process.poll() is not None:
                pytest.fail(f"the GUI exited with {process.returncode} at start:\n{process.stdout.read()}")
            if log.is_file() and "Main window shown" in log.read_text(encoding="utf-8"):
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"the GUI showed no window within {GUI_START_TIMEOUT_S} s (log {log})")
        startup = time.monotonic() - started
        time.sleep(GUI_STAYS_UP_S)
        assert process.poll() is None, f"the GUI exited on its own with {process.returncode}"
        process.send_signal(signal.SIGTERM)      # a desktop logout: the app closes its window
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, f"the GUI exited with {process.returncode}:\n{output}"
    assert "Traceback" not in output, output
    text = log.read_text(encoding="utf-8")
    assert "started (bundle" in text, text
    assert "Received SIGTERM" in text and "exited with status 0" in text, text
    return startup


def test_gui_starts_offscreen_stays_up_and_exits_cleanly(app: Path, user_dir: Path) -> None:
    startup = start_gui_and_close_it(app, user_dir / "home-gui", user_dir, QT_QPA_PLATFORM="offscreen")
    print(f"bundled GUI start-up to window shown (offscreen): {startup:.1f} s")


def test_gui_starts_on_an_x11_display(app: Path, user_dir: Path, x_display: str) -> None:
    """Qt's xcb plugin with the X11 libraries in the bundle (offscreen needs none of them)."""
    startup = start_gui_and_close_it(app, user_dir / "home-x11", user_dir, DISPLAY=x_display)
    print(f"bundled GUI start-up to window shown (Xvfb): {startup:.1f} s")


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb (Debian/Ubuntu)")
def test_deb_package_installs_the_bundle_with_menu_entry(archive: Path, tmp_path: Path) -> None:
    debs = sorted(DIST.glob("endoshare_*.deb"), key=lambda p: p.stat().st_mtime)
    if not debs:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but dev.py bundle made no .deb beside the archive")
        pytest.skip("no .deb in dist/ (python3 dev.py bundle makes one where dpkg-deb exists)")
    deb = debs[-1]
    fields = dict(line.split(": ", 1) for line in subprocess.run(
        ["dpkg-deb", "-f", str(deb)], capture_output=True, text=True, check=True).stdout.splitlines()
        if ": " in line and not line.startswith(" "))
    assert fields["Package"] == "endoshare" and "libc6 (>= 2.36)" in fields["Depends"]
    root = tmp_path / "root"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    for name in ("endoshare", "endoshare-gui"):
        link = root / "usr" / "bin" / name
        assert link.is_symlink() and not os.path.isabs(os.readlink(link)) and link.resolve().is_file()
    entry = (root / "usr" / "share" / "applications" / "endoshare.desktop").read_text(encoding="utf-8")
    assert "Exec=endoshare-gui" in entry.splitlines() and "Icon=endoshare" in entry.splitlines()
    assert (root / "usr" / "share" / "icons" / "hicolor" / "256x256" / "apps" / "endoshare.png").is_file()
    version = subprocess.run([str(root / "usr" / "bin" / "endoshare"), "--version"], env=clean_env(tmp_path / "home"),
                             cwd=tmp_path, capture_output=True, text=True, check=True).stdout.split()[-1]
    assert fields["Version"] == version
