"""How to use the app, and what it is not."""

from __future__ import annotations

from PySide6.QtWidgets import QMessageBox, QTextBrowser, QWidget

from .. import __version__

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
<li><b>Review</b>: hold every output in the archive until someone has reviewed it.</li>
</ul>
<p>Settings are checked when you save them: the folders must be writable and a weights file must load.</p>
<h3>2. Case builder</h3>
<p>Type the patient ID, press <b>Browse…</b> and choose the folder with the operation's clips. Check
the order (drag a clip, or use Move up / Move down), remove clips that do not belong, select a clip to see
a frame of it. A yellow note warns when clips differ in size or frame rate (the case is then re-encoded).
Press <b>Add case to queue</b>.</p>
<h3>3. Queue</h3>
<p><b>Start</b> runs the waiting cases; the bar shows the real progress of each. <b>Stop…</b> asks first,
then cancels: nothing half-written is published. A failed case shows why and the next case goes on.
<b>Open output folder</b> shows the result; the patient ID never appears in its name.</p>
<h3>4. Review</h3>
<p>Select a finished case and press <b>Review…</b>. Red on the timeline marks scenes that are blacked out
(or blurred, or cut) in the output. Play, click the timeline or step frame by frame; a red border means the
shown frame is redacted. Select a span to change its first and end frame (the end frame is the first one
shown again), or add and remove spans. <b>Re-render with these spans</b> makes the output again from your
spans without detecting again; then <b>Mark reviewed</b>.</p>
<p>Version {__version__}. Command line: <code>endoshare --help</code>.</p>
"""


class HelpView(QTextBrowser):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setOpenExternalLinks(True)
        self.setHtml(HELP_HTML)


def show_about(parent: QWidget) -> None:
    QMessageBox.about(parent, "About Endoshare",
                      f"<b>Endoshare {__version__}</b><p>De-identifies surgical videos: merges a case's clips, "
                      f"redacts out-of-body scenes, strips metadata, pseudonymises and verifies.</p>"
                      f"<p><b>{DISCLAIMER}</b></p><p>MIT licence.</p>")
