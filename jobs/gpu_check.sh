#!/usr/bin/env bash
# The GPU path, proven in one short call on a lent GPU machine (issue 15):
#   the gpu-marked tests; colorize bench --device cuda (default, --compile, --jpeg-decode device,
#   --format png and tiff rows, each against its own floor); a thread sweep of the encode/decode
#   pools; two CUDA runs of one job compared byte for byte; nvidia-smi sampled throughout.
# Everything lands in $OUT (default out/gpu-check); the bench table is appended to BENCHMARKS.md.
# On a machine without CUDA it says so and runs nothing GPU-specific (exit 0): the dry run.
#
#   bash jobs/gpu_check.sh            # here: the dry run
#   make gpu-wheels                   # here, once: the packages the GPU image lacks, as wheels
#   device run: carry .whl, command:
#     python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl \
#       && PYTHONPATH=/tmp/site:$PWD PY=python3 bash jobs/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-out/gpu-check}
COUNT=${COUNT:-1000}      # 1600x1200 scans: enough for a steady rate inside the time limit
mkdir -p "$OUT"
log() { echo "[gpu-check $(date +%T)] $*" | tee -a "$OUT/log.txt"; }

# one interpreter for both questions: each start imports torch, seconds on a small machine
"$PY" -c "import torch, sys; import pipeline.bench.bench, pipeline.worker.engine
sys.exit(0 if torch.cuda.is_available() else 3)"
cuda=$?
if [ "$cuda" -eq 3 ]; then
  log "no CUDA device here: nothing GPU-specific run (dry run)."
  log "would run: pytest -m gpu; colorize bench --device cuda --count $COUNT; thread sweep; byte-identity check"
  log "imports ok"
  exit 0
elif [ "$cuda" -ne 0 ]; then
  log "torch or the project does not import here (exit $cuda): nothing run"
  exit 1
fi

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -lms 500 \
  > "$OUT/smi.csv" 2>/dev/null &
SMI=$!
trap 'kill $SMI 2>/dev/null' EXIT

log "gpu-marked tests"
"$PY" -m pytest -q -m gpu -p no:cacheprovider tests/test_color.py tests/test_engine.py tests/test_hostile.py > "$OUT/gpu-tests.log" 2>&1
log "gpu tests exit $? ($(tail -1 "$OUT/gpu-tests.log"))"

log "bench: $COUNT scans of 1600x1200 on cuda"
"$PY" -m pipeline bench --device cuda --count "$COUNT" --width 1600 --height 1200 \
  --no-memory --naive-count 10 --append "$OUT/bench.md" > "$OUT/bench.log" 2>&1
log "bench exit $?"

log "thread sweep and byte identity on 400 scans (--format png)"
"$PY" - "$OUT" <<'EOF' > "$OUT/sweep.log" 2>&1
import hashlib, json, subprocess, sys
from pathlib import Path
import pyarrow.parquet as pq
from pipeline.bench.bench import make_archive
out = Path(sys.argv[1]); work = out / "sweep"
make_archive(work / "scans", 400, 1600, 1200, seed=3)
cli = [sys.executable, "-m", "pipeline"]
subprocess.run(cli + ["scan", str(work / "scans"), "-o", str(work / "m.parquet"), "--shard-size", "64", "-q"], check=True)
rows = []
for threads in (4, 8, 16):
    o = work / f"run-t{threads}"
    subprocess.run(cli + ["run", "--manifest", str(work / "m.parquet"), "-o", str(o), "--device", "cuda",
                          "--format", "png", "--threads", str(threads), "-q", "--summary-json", str(o) + ".json"], check=True)
    s = json.loads(Path(str(o) + ".json").read_text())
    rows.append((threads, s["images_per_s"], s.get("steady_images_per_s")))
    print(f"threads {threads}: wall {s['images_per_s']:.1f} img/s, steady {s.get('steady_images_per_s')}")
def shas(o):
    t = pq.read_table(o / "results").to_pylist()
    return sorted((r["image_id"], r["output_sha256"]) for r in t)
same = shas(work / "run-t4") == shas(work / "run-t16")
print("byte-identical across CUDA runs (4 vs 16 threads):", same)
(out / "sweep.json").write_text(json.dumps({"rows": rows, "identical": same}))
sys.exit(0 if same else 3)
EOF
log "sweep exit $? ($(tail -1 "$OUT/sweep.log"))"
kill $SMI 2>/dev/null
"$PY" - "$OUT" <<'EOF' | tee -a "$OUT/log.txt"
import csv, sys
rows = list(csv.reader(open(sys.argv[1] + "/smi.csv")))[1:]
u = [float(r[1].split()[0]) for r in rows if len(r) > 2 and r[1].strip().split()[0].isdigit()]
m = [float(r[2].split()[0]) for r in rows if len(r) > 2 and r[2].strip().split()[0].isdigit()]
if u:
    print(f"nvidia-smi: {len(u)} samples, utilisation mean {sum(u)/len(u):.0f} %, max {max(u):.0f} %, memory max {max(m):.0f} MiB")
EOF
if [ -s "$OUT/bench.md" ]; then
  { echo; echo "GPU check ($(head -2 "$OUT/gpu.txt" | tail -1)):"; cat "$OUT/bench.md";
    echo; cat "$OUT/sweep.log" | tail -4; } >> BENCHMARKS.md
fi
log "done; figures and logs in $OUT"
