"""How often the gray / toned / colour classifier (pipeline.imaging.classify_rgb, through decode)
gets real files wrong: colour photos called toned (they would be recolorized, their own colour
lost) and old prints called colour (they would be skipped). Issue 23, item 4.

    python jobs/classifier_rates.py colour data/kphotoalbum data/historical data/train:eval data/train:val
    python jobs/classifier_rates.py old data/historical-scans

FOLDER:split reads a training collection's split (make train-data); a folder is read whole.
Prints the counts and each file on the wrong side."""

import sys
from collections import Counter
from pathlib import Path

from pipeline.model.train import list_images
from pipeline.worker.imaging import decode


def files(spec: str) -> list[str]:
    if ":" in spec:
        from pipeline.model.traindata import read_manifest

        folder, split = spec.split(":")
        return [r["path"] for r in read_manifest(Path(folder), split)]
    return list_images(spec)


def main(expect: str, specs: list[str]) -> None:
    wrong_kind = {"colour": ("toned", "gray"), "old": ("color",)}[expect]
    total, wrong = Counter(), []
    for spec in specs:
        kinds = Counter()
        for p in files(spec):
            k = decode(p).kind
            kinds[k] += 1
            if k in wrong_kind:
                wrong.append(f"{k}: {p}")
        total += kinds
        print(f"{spec}: {sum(kinds.values())} files, " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
    n = sum(total.values())
    bad = sum(total[k] for k in wrong_kind)
    print(f"all: {n} {expect} files; called {'/'.join(wrong_kind)}: {bad} ({100 * bad / max(n, 1):.1f} %)")
    for w in wrong:
        print("  " + w)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
