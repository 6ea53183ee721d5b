#!/bin/sh
# The independent evaluation photos: the 23 demo photographs of Debian's kphotoalbum package
# (people in a bar and on a beach, portraits, dogs, a canyon, a pool, snow, a sunset). They are
# never trained on (pipeline.model.traindata does not read this package) and never committed; issue 11
# first measured the colour on them. qt-logo.jpg is a logo, not a photograph, and is left out.
# usage: sh jobs/fetch_kphotoalbum.sh OUTDIR   (apt-get download + dpkg -x; no install, no root)
set -e
OUT=$(realpath -m "${1:-data/kphotoalbum}")
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
(cd "$WORK" && apt-get download kphotoalbum >/dev/null)
dpkg -x "$WORK"/kphotoalbum_*.deb "$WORK/root"
mkdir -p "$OUT"
for f in "$WORK"/root/usr/share/kphotoalbum/demo/*.jpg; do
  [ "$(basename "$f")" = qt-logo.jpg ] || cp "$f" "$OUT/"
done
cp "$WORK/root/usr/share/doc/kphotoalbum/copyright" "$OUT/copyright"
find "$OUT" -name '*.jpg' | wc -l
