"""Draw the built-in detector's failure cases for docs/builtin-detector.md (training-only tool).

    python tools/failure_picture.py --scores build/cv.scores.npy --cache build/views.npz \
        --threshold 0.3 --output docs/images/detector-failures.png

Top row: out-of-body stills scoring below the entry threshold, lowest first; bottom row: in-body stills
scoring at or above it, highest first; each with its source and its out-of-fold score (a head that never
saw its source).  Only rows whose licence allows redistribution in the docs (MIT, Apache-2.0, CC BY 4.0)
are drawn; the others are counted in the caption of the figure in the docs, not shown.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))
import detector_data as data  # noqa: E402
import train_detector as train  # noqa: E402

THUMB = (320, 180)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, default=train.DEFAULT_TABLE)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--scores", type=Path, required=True, help="out-of-fold scores from train_detector.py")
    parser.add_argument("--threshold", type=float, required=True)
    parser.add_argument("--per-row", type=int, default=4)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()

    rows = data.read_rows(args.table)
    cached = np.load(args.cache, allow_pickle=False)
    scores = np.load(args.scores)
    shown = cached["plain"] & (cached["row"] >= 0) & ~np.isnan(scores)
    score_of = {int(r): float(s) for r, s in zip(cached["row"][shown], scores[shown], strict=True)}
    drawable = {i: s for i, s in score_of.items() if rows[i].licence.startswith(data.TRAINABLE_LICENCES)}
    missed = sorted((i for i, s in drawable.items() if rows[i].target == 1 and s < args.threshold),
                    key=lambda i: drawable[i])
    flagged = sorted((i for i, s in drawable.items() if rows[i].target == 0 and s >= args.threshold),
                     key=lambda i: -drawable[i])
    # One picture per source in each row first, so that a source with many failures does not fill it.
    picked = []
    for group in (missed, flagged):
        by_source: list[int] = []
        for index in group:
            if rows[index].source not in {rows[j].source for j in by_source}:
                by_source.append(index)
        by_source += [i for i in group if i not in by_source]
        picked.append(by_source[:args.per_row])
    canvas = Image.new("RGB", (THUMB[0] * args.per_row, (THUMB[1] + 20) * 2), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for line, group in enumerate(picked):
        for column, index in enumerate(group):
            x, y = column * THUMB[0], line * (THUMB[1] + 20)
            canvas.paste(data.load_picture(rows[index]).resize(THUMB, Image.Resampling.BILINEAR), (x, y))
            kind = "out of body" if rows[index].target == 1 else "in body"
            draw.text((x + 4, y + THUMB[1] + 4), f"{rows[index].source} ({kind}): {drawable[index]:.3f}",
                      fill=(0, 0, 0))
    canvas.save(args.output)
    print(f"{args.output}: {len(missed)} out-of-body stills missed, {len(flagged)} in-body stills flagged "
          f"(drawable rows only)")


if __name__ == "__main__":
    main()
