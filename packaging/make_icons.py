"""Write the app's icon (drawn in ``endoshare.gui.desktop.ICON_SVG``) as SVG, PNG and ICO files.

    python packaging/make_icons.py OUT_DIR

Run by ``dev.py bundle`` with the bundle's Python (it needs PySide6); the files are build products.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtGui import QGuiApplication  # noqa: E402

from endoshare.gui.desktop import ICON_SVG, render_icon  # noqa: E402


def main(out: Path) -> None:
    app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])  # noqa: F841 - QImage needs one
    out.mkdir(parents=True, exist_ok=True)
    (out / "endoshare.svg").write_text(ICON_SVG, encoding="utf-8")
    image = render_icon(256)
    for name in ("endoshare.png", "endoshare.ico"):
        if not image.save(str(out / name)):
            raise SystemExit(f"could not write {out / name}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
