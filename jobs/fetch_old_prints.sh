#!/usr/bin/env bash
# Extract the real old photographic prints listed in jobs/old_prints_train.txt (repo @ commit :
# path | rights as stated) from their repositories' snapshots (the fetch tool's bare git dirs)
# into data/old-prints-train/<owner>+<repo>/. They fit and cross-validate the toned-print probe
# (jobs/probe_toned_features.py); none comes from the test's collections (DeOldify's and
# Bringing-Old-Photos-Back-to-Life's test images) or copies of them. Never committed.
#
# Usage: jobs/fetch_old_prints.sh [MIRROR_DIR]   (default /work/.mirror; expects
# MIRROR_DIR/<owner>+<name>/repo). A file already present is left alone; nothing is deleted.
set -euo pipefail
MIRROR="${1:-/work/.mirror}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/data/old-prints-train"
n=0 missing=0
while IFS= read -r line; do
  [[ -z "$line" || "$line" == \#* ]] && continue
  spec="${line%% | *}"
  repo="${spec%% @ *}"; rest="${spec#* @ }"
  commit="${rest%% : *}"; path="${rest#* : }"
  git="$MIRROR/${repo/\//+}/repo"
  out="$DEST/${repo/\//+}/$(basename "$path")"
  [[ -s "$out" ]] && { n=$((n + 1)); continue; }
  mkdir -p "$(dirname "$out")"
  if git --git-dir="$git" cat-file blob "$commit:$path" > "$out.tmp" 2>/dev/null; then
    mv "$out.tmp" "$out"; n=$((n + 1))
  else
    rm -f "$out.tmp"; missing=$((missing + 1)); echo "missing: $line" >&2
  fi
done < "$ROOT/jobs/old_prints_train.txt"
echo "$n prints in $DEST ($missing missing: fetch their repositories first)"
