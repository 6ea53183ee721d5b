#!/usr/bin/env bash
# One call on a lent GPU machine, at most ~9 minutes in all (issue 22):
#   (a) jobs/gpu_check.sh, cut off after CHECK_S seconds: gpu tests, cuda bench, thread sweep,
#       byte identity, nvidia-smi samples, into $OUT/check;
#   (b) training on the pack for TRAIN_MIN minutes from the shipped weights (or the hint variant's
#       last checkpoint: TRAIN_ARGS="--hints 8 --init out/hints/last.pt"; old films' lightness:
#       TRAIN_ARGS="--film 0.3"; old prints' damage: TRAIN_ARGS="--film 0.3 --damage 0.3"), checkpoints into
#       $OUT/train every 30 s, so a kill keeps what was done.
# Here, without CUDA, the same script is the dry run: the check says so, the training runs on the
# CPU (tests/test_gputrain.py runs it with tiny limits).
#
#   make gpu-wheels gpu-pack                   # here, once: .whl/ and out/gpu-pack.npz (<= 28 MiB)
#   device run, carry [".whl", "out/gpu-pack.npz"], timeout_s 590, command:
#     python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl \
#       && PYTHONPATH=/tmp/site:$PWD PY=python3 OUT=$OUT/session bash jobs/gpu_session.sh
#   (the tree ~5 MiB + .whl 28 MiB + the pack 26.8 MiB: ~60 of the 64 MiB a call carries)
#   back here: colorize tune-gain best.pt data/train --out tuned.pt (it carries the init's gain,
#   untuned), then colorize evaluate with tuned.pt on every set beside the shipped weights.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-out/gpu-session}
PACK=${PACK:-out/gpu-pack.npz}
CHECK_S=${CHECK_S:-240}
TRAIN_MIN=${TRAIN_MIN:-4}
TRAIN_ARGS=${TRAIN_ARGS:-}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1  # a log cut off by a timeout keeps what was printed
log() { echo "[gpu-session $(date +%T)] $*" | tee -a "$OUT/log.txt"; }

log "check, at most ${CHECK_S} s"
OUT="$OUT/check" COUNT=${COUNT:-300} PY="$PY" timeout --kill-after=10 "$CHECK_S" bash jobs/gpu_check.sh \
  > "$OUT/check.log" 2>&1
log "check exit $? ($(tail -1 "$OUT/check.log"))"
pkill -f "nvidia-smi --query-gpu" 2>/dev/null  # the check's sampler, when the cut-off left it

log "training on $PACK for $TRAIN_MIN minutes"
# its own deadline too: the pack's decoding and the last save may not outlast the device's time
limit=$("$PY" -c "print(int(float('$TRAIN_MIN') * 60 + 60))")
# shellcheck disable=SC2086  # TRAIN_ARGS: several flags
timeout --kill-after=10 "$limit" "$PY" -m pipeline.model.gputrain train "$PACK" "$OUT/train" \
  --minutes "$TRAIN_MIN" $TRAIN_ARGS > "$OUT/train.log" 2>&1
rc=$?
log "training exit $rc ($(tail -1 "$OUT/train.log"))"
exit $rc
