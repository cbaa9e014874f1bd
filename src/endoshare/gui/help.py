"""How to use the app, what it is not, what it is made of (versions and licences) and where its logs are."""

from __future__ import annotations

import html
import platform
import re
import sys
import sysconfig
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from PySide6.QtCore import qVersion
from PySide6.QtWidgets import QMessageBox, QTextBrowser, QWidget

from .. import __version__
from ..jobs.audit import AUDIT_FILE_NAME
from .desktop import log_file

DISCLAIMER = ("Endoshare is research software. It is not a medical device and is not certified for clinical "
              "use. Automatic out-of-body detection can miss scenes: review every case before you share it.")

HELP_HTML = f"""
<h2>Endoshare — de-identify surgical videos</h2>
<p style="background:#fff3c4;padding:6px"><b>Disclaimer.</b> {DISCLAIMER}</p>
<h3>1. Settings (File → Settings)</h3>
<ul>
<li><b>Archive folder</b>: private. It keeps the list linking each pseudonym to its patient ID and the
    detected scenes. Never share it.</li>
<li><b>Shared folder</b>: where the de-identified videos and their reports go.</li>
<li><b>Mode</b>: <i>fast</i> copies what needs no change; <i>advanced</i> re-encodes with the codec,
    quality and size you choose.</li>
<li><b>Redaction</b>: black frames, blur, or cut the out-of-body scenes out.</li>
<li><b>Detector</b>: the built-in model, OOBNet with its weights file, or none (you mark scenes yourself
    in Review).</li>
<li><b>Cases at once</b>: how many cases run side by side (each uses the processor fully).</li>
<li><b>Review</b> (on by default): hold every output in the archive until someone has reviewed it.</li>
</ul>
<p>Settings are checked when you save them: the folders must be full paths and writable, and a weights
file must load. A folder that disappears later is refused, never silently created again.</p>
<h3>2. Case builder</h3>
<p>Type the patient ID, press <b>Browse…</b> and choose the folder with the operation's clips. Check
the order (drag a clip, or use Move up / Move down), remove clips that do not belong, select a clip to see
a frame of it. A yellow note warns when clips differ in size or frame rate (the case is then re-encoded),
when the same recording is listed twice, or when a clip comes from another folder (another patient?).
Press <b>Add case to queue</b>.</p>
<h3>3. Queue</h3>
<p><b>Start</b> runs the waiting cases; the bar shows the real progress of each and the line at the
bottom an estimate of the time left. <b>Stop…</b> asks first, then stops: nothing half-written is
published and the cases run again on the next Start. The queue is kept in the archive: after closing the
app or a crash, everything is still there. A failed case shows why, the next case goes on, and
<b>Retry</b> runs it again. A finished case shows <b>needs review</b> until someone reviewed it.
<b>Open output folder</b> shows the result; the patient ID never appears in its name.</p>
<h3>4. Review</h3>
<p>Select a finished case and press <b>Review…</b>. Red on the timeline marks scenes that are hidden
(blacked out, blurred or cut) in the output; the picture shows the output as it will look (untick
<i>Show the output</i> to see the source). Click a span in the list to jump to it, click the timeline to
select one, <b>N</b>/<b>P</b> for the next/previous span, <b>Space</b> to play, <b>←/→</b> one frame,
<b>Shift+←/→</b> one second, <b>Zoom +</b> for long cases. Times read minutes:seconds:frame.
Select a span to change its first and last hidden frame, use <b>Start here</b>/<b>End here</b> at the
playhead, or add and remove spans; <b>Ctrl+Z</b> undoes any change. <b>Re-render with these spans</b> makes
the output again from your spans without detecting again; then <b>Mark reviewed</b>: your name (user
account), the time and the spans are recorded, and the output is shared.</p>
<p>Version {__version__}. Command line: <code>endoshare --help</code>.</p>
"""

#: Licence files inside a distribution's metadata folder (``*.dist-info/licenses/...`` or top-level names).
_LICENCE_FILE = re.compile(r"(^|/)(licen[cs]es?/|(LICEN[CS]E|COPYING|NOTICE|COPYRIGHT)[^/]*$)", re.IGNORECASE)
_REQUIREMENT = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")
#: The GNU licences FFmpeg and its codecs come under, as Debian installs them (the bundle carries copies).
SYSTEM_LICENCES = Path("/usr/share/common-licenses")
FFMPEG_LICENCE_NAMES = ("LGPL-3", "LGPL-2.1", "GPL-3", "GPL-2")
QT_LICENCE_NAMES = ("LGPL-3", "GPL-3")
#: The extras of Endoshare that the desktop app and the bundle contain (the test extras are not shipped).
SHIPPED_EXTRAS = ("gui",)


@dataclass(frozen=True)
class Component:
    name: str
    version: str
    licence: str
    #: (file name, text) of the licence files that came with the component.
    texts: tuple[tuple[str, str], ...] = ()
    note: str = ""


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _licence_of(dist: metadata.Distribution) -> str:
    meta = dist.metadata

    def field(name: str) -> str | None:
        values = meta.get_all(name)
        return str(values[0]) if values else None

    expression = field("License-Expression")
    if expression:
        return expression
    classifiers = [c.split(" :: ")[-1] for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    if classifiers:
        return ", ".join(classifiers)
    free_text = (field("License") or "").strip()
    return free_text.splitlines()[0][:80] if free_text else "not stated"


def _licence_texts(dist: metadata.Distribution) -> tuple[tuple[str, str], ...]:
    texts = []
    for file in dist.files or ():
        parts = file.parts
        inside = [i for i, part in enumerate(parts) if part.endswith((".dist-info", ".egg-info"))]
        relative = "/".join(parts[inside[0] + 1:]) if inside else ""
        if relative and _LICENCE_FILE.search(relative) and not relative.endswith((".pyc", ".pyo")):
            try:
                data = Path(str(dist.locate_file(file))).read_bytes()
            except OSError:
                continue
            texts.append((relative, data.decode("utf-8", errors="replace")))
    return tuple(texts)


def _followed(requirement: str, extras: frozenset[str]) -> tuple[str, frozenset[str]] | None:
    """(name, extras asked for) of a requirement that applies: no extra marker, or one of ``extras``.
    Platform markers are judged by whether the package is installed."""
    match = _REQUIREMENT.match(requirement)
    needs = set(re.findall(r"extra\s*==\s*['\"]([^'\"]+)['\"]", requirement))
    if match is None or (needs and not needs & extras):
        return None
    return match.group(1), frozenset(e.strip() for e in (match.group(2) or "").split(",") if e.strip())


def installed_components(root: str = "endoshare") -> list[Component]:
    """Every installed distribution Endoshare runs on (its requirements, recursively, with the extras they
    ask for and Endoshare's shipped extras), with its licence."""
    done: dict[str, frozenset[str]] = {}
    found: list[Component] = []
    pending = [(root, frozenset(SHIPPED_EXTRAS))]
    while pending:
        name, extras = pending.pop(0)
        key = _normalise(name)
        if key in done and extras <= done[key]:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        if key not in done:
            found.append(Component(dist.metadata["Name"] or name, dist.version, _licence_of(dist),
                                   _licence_texts(dist)))
        done[key] = done.get(key, frozenset()) | extras
        for requirement in dist.requires or ():
            followed = _followed(requirement, done[key])
            if followed is not None:
                pending.append(followed)
    return found


def ffmpeg_component() -> Component:
    """FFmpeg inside PyAV's wheel, with the licence and build configuration its own libraries report."""
    import av
    from av import _core
    meta = _core.library_meta.get("libavcodec")
    libs_dir = Path(av.__file__).resolve().parent.parent / "av.libs"
    shipped = sorted(p.name.split("-")[0].split(".")[0] for p in libs_dir.glob("*")) if libs_dir.is_dir() else []
    configuration = meta["configuration"] if meta is not None else "unknown"
    gpl_codecs = [name for name in ("libx264", "libx265") if f"--enable-{name}" in configuration]
    note = (f"Build configuration: {configuration}." +
            (f" Native libraries shipped with it: {', '.join(shipped)}." if shipped else "") +
            (f" Linked encoders under GPL-2.0-or-later: {', '.join(gpl_codecs)}." if gpl_codecs else ""))
    licence = meta["license"] if meta is not None else "unknown"
    return Component("FFmpeg (inside PyAV)", str(av.ffmpeg_version_info), licence,
                     _texts_in(_licence_folder("FFmpeg", SYSTEM_LICENCES), FFMPEG_LICENCE_NAMES), note)


def _licence_folder(component: str, unbundled: Path) -> Path:
    """Where a component's licence texts are: the bundle's ``licenses/<component>`` (put there by
    packaging/endoshare.spec), else the place they have on this system."""
    if getattr(sys, "frozen", False):
        return Path(getattr(sys, "_MEIPASS", "")) / "licenses" / component
    return unbundled


def _texts_in(folder: Path, names: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    return tuple((name, (folder / name).read_text(encoding="utf-8", errors="replace"))
                 for name in names if (folder / name).is_file())


def python_component() -> Component:
    texts = _texts_in(_licence_folder("Python", Path(sysconfig.get_paths()["stdlib"])), ("LICENSE.txt",))
    return Component("Python", platform.python_version(), "PSF-2.0", texts)


def bundled_components() -> list[Component]:
    """What the app is made of: Endoshare, Python, FFmpeg, Qt and every Python package it runs on."""
    components = installed_components()
    qt = Component("Qt (inside PySide6)", qVersion(), "LGPL-3.0-only (as PySide6)",
                   _texts_in(_licence_folder("Qt", SYSTEM_LICENCES), QT_LICENCE_NAMES))
    return components[:1] + [python_component(), ffmpeg_component(), qt] + components[1:]


def components_html(components: list[Component]) -> str:
    rows = "".join(f"<tr><td>{html.escape(c.name)}</td><td>{html.escape(c.version)}</td>"
                   f"<td>{html.escape(c.licence)}</td></tr>" for c in components)
    notes = "".join(f"<p><b>{html.escape(c.name)}</b>: {html.escape(c.note)}</p>" for c in components if c.note)
    texts = "".join(f"<h4>{html.escape(c.name)} — {html.escape(name)}</h4><pre>{html.escape(text)}</pre>"
                    for c in components for name, text in c.texts)
    return (f"<table border='1' cellpadding='3' cellspacing='0'><tr><th>Component</th><th>Version</th>"
            f"<th>Licence</th></tr>{rows}</table>{notes}<h3>Licence texts</h3>{texts}")


def about_html() -> str:
    """Version, where the logs are, and the bundled components with their licences."""
    frozen = "self-contained app" if getattr(sys, "frozen", False) else "Python package"
    return (f"<h3>About this copy</h3><p>Endoshare {__version__} ({frozen}), Python {platform.python_version()}, "
            f"Qt {qVersion()}.</p>"
            f"<h3>Logs</h3><ul><li>This app's log: <code>{html.escape(str(log_file()))}</code> (start, exit, case "
            f"status by pseudonym, errors by type; the app writes no patient ID into it).</li>"
            f"<li>Each archive folder's audit log: <code>&lt;archive&gt;/{AUDIT_FILE_NAME}</code> (every case, "
            f"private).</li></ul><h3>Components and licences</h3>"
            "<p>Endoshare's own code is MIT-licensed. It ships with these components, under their own licences:</p>"
            + components_html(bundled_components()))


class HelpView(QTextBrowser):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setOpenExternalLinks(True)
        self.setHtml(HELP_HTML + about_html())


def show_about(parent: QWidget) -> None:
    QMessageBox.about(parent, "About Endoshare",
                      f"<b>Endoshare {__version__}</b><p>De-identifies surgical videos: merges a case's clips, "
                      f"redacts out-of-body scenes, strips metadata, pseudonymises and verifies.</p>"
                      f"<p><b>{DISCLAIMER}</b></p><p>MIT licence; the bundled components' licences are listed "
                      f"at the end of the Help tab.</p><p>Log file: {html.escape(str(log_file()))}</p>")
