"""``endoshare gui``: start the desktop app (needs the ``gui`` extra: PySide6)."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from ..types import ExitCode


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("gui", help="start the desktop app (build cases, run the queue, review)")
    parser.add_argument("--settings", type=Path, metavar="FILE",
                        help="keep the app's settings in this INI file instead of the user's standard location")
    parser.set_defaults(func=run)


#: The system libraries Qt's X11 (xcb) platform plugin loads, and the packages that hold them.
PACKAGES = {  # library: (Debian/Ubuntu, Fedora/RHEL)
    "libxcb-cursor.so.0": ("libxcb-cursor0", "xcb-util-cursor"),
    "libxcb-icccm.so.4": ("libxcb-icccm4", "xcb-util-wm"),
    "libxcb-keysyms.so.1": ("libxcb-keysyms1", "xcb-util-keysyms"),
    "libxcb-image.so.0": ("libxcb-image0", "xcb-util-image"),
    "libxcb-render-util.so.0": ("libxcb-render-util0", "xcb-util-renderutil"),
    "libxcb-shape.so.0": ("libxcb-shape0", "libxcb"),
    "libxcb-randr.so.0": ("libxcb-randr0", "libxcb"),
    "libxcb-xfixes.so.0": ("libxcb-xfixes0", "libxcb"),
    "libxcb-xkb.so.1": ("libxcb-xkb1", "libxcb"),
    "libxcb-sync.so.1": ("libxcb-sync1", "libxcb"),
    "libxcb-shm.so.0": ("libxcb-shm0", "libxcb"),
    "libxcb-render.so.0": ("libxcb-render0", "libxcb"),
    "libxcb.so.1": ("libxcb1", "libxcb"),
    "libxkbcommon-x11.so.0": ("libxkbcommon-x11-0", "libxkbcommon-x11"),
    "libxkbcommon.so.0": ("libxkbcommon0", "libxkbcommon"),
    "libX11-xcb.so.1": ("libx11-xcb1", "libX11-xcb"),
    "libEGL.so.1": ("libegl1", "libglvnd-egl"),
    "libGL.so.1": ("libgl1", "libglvnd-glx"),
    "libOpenGL.so.0": ("libopengl0", "libglvnd-opengl"),
    "libfontconfig.so.1": ("libfontconfig1", "fontconfig"),
    "libfreetype.so.6": ("libfreetype6", "freetype"),
    "libdbus-1.so.3": ("libdbus-1-3", "dbus-libs"),
    "libglib-2.0.so.0": ("libglib2.0-0", "glib2"),
}
_NOT_FOUND = re.compile(r"^\s*(\S+)\s+=>\s+not found", re.MULTILINE)


def missing_from_ldd(output: str) -> list[str]:
    """The libraries ``ldd`` reports as ``not found`` (each once, in its order)."""
    return list(dict.fromkeys(_NOT_FOUND.findall(output)))


def xcb_plugin() -> Path | None:
    try:
        import PySide6
    except ImportError:
        return None
    plugin = Path(PySide6.__file__).parent / "Qt" / "plugins" / "platforms" / "libqxcb.so"
    return plugin if plugin.is_file() else None


def missing_system_libraries() -> list[str]:
    """The libraries Qt's X11 plugin needs and cannot find (Linux with X11 only; else empty).

    Qt itself only says "xcb-cursor0 ... is needed" whatever is missing; ``ldd`` names every one."""
    if not sys.platform.startswith("linux") or os.environ.get("QT_QPA_PLATFORM", "xcb") != "xcb":
        return []
    plugin, ldd = xcb_plugin(), shutil.which("ldd")
    if plugin is None or ldd is None:
        return []
    try:
        done = subprocess.run([ldd, str(plugin)], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    return missing_from_ldd(done.stdout)


def missing_libraries_message(missing: list[str]) -> str:
    debian = sorted({PACKAGES[lib][0] for lib in missing if lib in PACKAGES})
    fedora = sorted({PACKAGES[lib][1] for lib in missing if lib in PACKAGES})
    unknown = [lib for lib in missing if lib not in PACKAGES]
    lines = ["endoshare gui: the desktop app cannot start: these system libraries are missing:",
             *(f"  {lib}" for lib in missing), "Install them (as root), then start the app again:"]
    if debian:
        lines.append(f"  Debian/Ubuntu: apt-get install {' '.join(debian)}")
    if fedora:
        lines.append(f"  Fedora/RHEL:   dnf install {' '.join(fedora)}")
    if unknown:
        lines.append(f"  (find the package holding {', '.join(unknown)} with your distribution's package search)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        from ..gui.app import main
    except ImportError as exc:
        print(f"endoshare gui: the desktop app needs PySide6 ({exc}); install it with "
              "pip install 'endoshare[gui]'.", file=sys.stderr)
        return ExitCode.USAGE
    missing = missing_system_libraries()
    if missing:
        print(missing_libraries_message(missing), file=sys.stderr)
        return ExitCode.USAGE
    return main(settings_path=args.settings)


def console_main() -> int:
    """Entry point of ``endoshare-gui``."""
    parser = argparse.ArgumentParser(prog="endoshare-gui", description="Endoshare desktop app")
    parser.add_argument("--settings", type=Path, metavar="FILE")
    return run(parser.parse_args())
