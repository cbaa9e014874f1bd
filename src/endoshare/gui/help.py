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
