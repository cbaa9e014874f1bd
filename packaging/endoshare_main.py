"""Entry point of the bundled app: one program, two names.

The bundle holds two executables built from this script, ``endoshare`` (console) and ``endoshare-gui``
(windowed on Windows and macOS); the name the program was started under chooses the command line or the
desktop app.  ``freeze_support`` must run first: the job queue's worker processes (multiprocessing's fork
server and resource tracker) are started by running this same executable again.
"""

import multiprocessing
import sys
from pathlib import Path


def main() -> int:
    multiprocessing.freeze_support()
    if Path(sys.executable).stem.lower() == "endoshare-gui":
        from endoshare.cli.gui import console_main
        return console_main()
    from endoshare.cli import main as cli_main
    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
