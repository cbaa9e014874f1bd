"""Smoke test of a built bundle on any platform (used by .github/workflows/bundle.yml).

    python packaging/smoke.py dist/Endoshare

Runs the bundled command line on a generated sample case and checks that the output was verified and
its out-of-body frames redacted.  On Linux, tests/test_bundle.py tests much more (clean environment,
GUI, development data); this is the part that runs on every hosted runner.
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path


def main(app: Path) -> None:
    cli = app / ("endoshare.exe" if sys.platform == "win32" else "endoshare")
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        subprocess.run([str(cli), "--version"], check=True)
        subprocess.run([str(cli), "sample", str(work / "input")], check=True)
        case = next(p for p in (work / "input").iterdir() if p.is_dir())
        result = subprocess.run([str(cli), "process", str(case), "--out", str(work / "shared"), "--archive",
                                 str(work / "archive"), "--json"], check=True, capture_output=True, text=True)
        entry = json.loads(result.stdout.strip().splitlines()[-1])["cases"][0]
        report = json.loads(Path(entry["report"]).read_text(encoding="utf-8"))
        failed = [c["name"] for c in report["checks"] if not c["passed"]]
        truth = json.loads((work / "input" / "truth.json").read_text(encoding="utf-8"))["labels"]
        spans = [(s["start_frame"], s["end_frame"]) for s in report["redaction"]["spans"]]
        missed = [i for i, label in enumerate(truth) if label == "oob" and not any(a <= i < b for a, b in spans)]
        if entry["status"] != "ok" or failed or missed:
            sys.exit(f"bundle smoke test failed: status {entry['status']}, failed checks {failed}, "
                     f"{len(missed)} out-of-body frames not redacted")
        print(f"bundle smoke test passed: {len(report['checks'])} checks, {report['redaction']['frames']} frames "
              "redacted")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
