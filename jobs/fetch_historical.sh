#!/bin/sh
# The historical evaluation set: 21 Prokudin-Gorsky three-colour glass plates (Library of Congress,
# Prints & Photographs, Prokudin-Gorskii Collection; public domain, no known restrictions), as copied
# into three public GitHub course repositories. None of the three carries a licence file; the plates
# themselves are LoC public-domain scans. Never trained on, never committed (data/ is ignored).
# Each plate is one grayscale image, top to bottom: blue, green, red exposure.
# The repositories must already be fetched as bare snapshots into MIRROR/owner+name/repo[/.git].
# usage: sh jobs/fetch_historical.sh [MIRROR] [PLATES] [OUT]
#   defaults: /work/.mirror  data/historical-plates  data/historical
set -e
MIRROR=$(realpath -m "${1:-/work/.mirror}")
PLATES=$(realpath -m "${2:-data/historical-plates}")
OUT=$(realpath -m "${3:-data/historical}")
HERE=$(dirname "$0")
mkdir -p "$PLATES"

gitdir() { # owner+name -> its bare git dir
  if [ -d "$MIRROR/$1/repo/.git" ]; then echo "$MIRROR/$1/repo/.git"; else echo "$MIRROR/$1/repo"; fi
}
take() { # owner+name commit dir name... : copy dir/name from that commit as PLATES/name
  g=$(gitdir "$1"); c=$2; d=$3; shift 3
  for f in "$@"; do git --git-dir="$g" show "$c:$d/$f" > "$PLATES/$f"; done
}

# Berkeley CS194-26 (2020) set: the three small .jpg plates and emir at full resolution (3702x9627)
take SainanChen+194proj1 24e8ebdb736f84efd14f9524b153bc7d23ba6712 . \
  cathedral.jpg monastery.jpg tobolsk.jpg emir.jpg
# LoC plates 0xxxxv.jpg (about 400x1024) scraped from loc.gov by the repository's own Scraper.py
take base0x10+Prokudin-Compositing 8e3ddd97b2d28e3f2973e29f649d64da8ab470b3 \
  Prokudin-Compositing/data-sets/design-set \
  00056v.jpg 00125v.jpg 00163v.jpg 00804v.jpg 01164v.jpg 01269v.jpg 01522v.jpg 01597v.jpg \
  01598v.jpg 01728v.jpg 10131v.jpg 31421v.jpg
# UIUC / UMich EECS 442 (2019) set; 00125v.jpg is the same file as above and efros_tableau.jpg is
# not a Prokudin-Gorsky plate, so both are left out
take unghee+eecs442-computer-vision 229e4079134e5eb981f72b7160d4ff95e9beefff \
  hw1_submission/HW1_files/prokudin-gorskii \
  00149v.jpg 00153v.jpg 00351v.jpg 00398v.jpg 01112v.jpg

echo "$(ls "$PLATES" | wc -l) plates in $PLATES"
nice -n 19 "$HERE/../.venv/bin/python" "$HERE/make_historical.py" "$PLATES" --out "$OUT"
