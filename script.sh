#!/usr/bin/env bash
# Train and test every registered family on the same data with the same budget, then write
# RESULTS/summary.md (one row per family, best values in bold).
#
#   bash script.sh                                   # demo data, defaults of main.py
#   bash script.sh --data cifar10 --image_size 32 --epochs 30 --device cuda
#   bash script.sh --quick                           # a CPU smoke run: small images, one epoch,
#                                                    # into Results/quick (apart from full-size runs)
#   bash script.sh --families unet,unetgan           # only these families (default: all of them)
#   bash script.sh --guided --hint_counts 0,1,5,10   # the hint-taking families, tested with n hints
#   bash script.sh --encoder inception_v3            # the families that take a pretrained encoder, with it
#                                                    # (run folders FAMILY_inception_v3)
#
# --results DIR writes to DIR instead of Results/. Any other option is passed to every main.py
# call (e.g. --batch_size 128 --wandb offline).
# Each run logs to RESULTS/logs/<family>.{train,test}.log. A family whose test already finished
# is skipped, and one whose training was interrupted resumes from its last.pt, so an interrupted
# batch can simply be started again; --force trains and tests everything afresh. unetddim is
# tested on unetddpm's checkpoint (the same network and training) instead of training it again.
set -uo pipefail
cd "$(dirname "$0")"

PY=${PYTHON:-python}
RESULTS=
QUICK=
FORCE=
ONLY=
COMMON=()
TRAIN_ONLY=()
TEST_ONLY=()
SUFFIX=  # --encoder NAME: run folders FAMILY_NAME
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1; TRAIN_ONLY+=(--epochs 1)  # small images, one epoch, short diffusion chains
             COMMON+=(--image_size 32 --batch_size 64 --timesteps 100 --steps 10); shift ;;
    --results) RESULTS=$2; shift 2 ;;
    --force) FORCE=1; shift ;;
    --families) ONLY=$2; shift 2 ;;
    --epochs) TRAIN_ONLY+=(--epochs "$2"); shift 2 ;;
    --hint_counts) TEST_ONLY+=(--hint_counts "$2"); shift 2 ;;  # test mode's hint curve (--guided runs)
    --encoder) COMMON+=(--encoder "$2"); [ "$2" != none ] && SUFFIX="_$2"; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) COMMON+=("$1"); shift ;;
  esac
done
# a smoke run has its own folder: the main job's unet (10 epochs, 64 px) would otherwise count as
# done and then be set apart from the one-epoch 32 px runs it is compared with
[ -z "$RESULTS" ] && RESULTS=$([ -n "$QUICK" ] && echo Results/quick || echo Results)
COMMON+=(--results "$RESULTS")
mkdir -p "$RESULTS/logs"
# one script.sh per results folder (a second one would truncate the first one's logs)
lock="$RESULTS/.script.lock"
if ! mkdir "$lock" 2>/dev/null; then
  pid=$(cat "$lock/pid" 2>/dev/null)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    echo "error: another script.sh (pid $pid) is running on $RESULTS; wait for it or use --results" >&2; exit 2
  fi
  echo "note: removed a stale lock $lock (process ${pid:-?} is gone)"
  rm -rf "$lock"; mkdir "$lock" || exit 2
fi
echo $$ > "$lock/pid"
trap 'rm -rf "$lock"' EXIT

families=$($PY -c "
import sys
from registry import REGISTRY
only = [f for f in sys.argv[1].split(',') if f] or list(REGISTRY)
unknown = [f for f in only if f not in REGISTRY]
if unknown:
    print(f'error: --families: unknown {\", \".join(unknown)}; known: {\", \".join(REGISTRY)}', file=sys.stderr)
    sys.exit(2)
if '--guided' in sys.argv[2:]:  # only the families whose networks take colour hints
    from models.hints import takes_hints
    only = [f for f in only if takes_hints(REGISTRY[f].network)]
if '--encoder' in sys.argv[2:] and sys.argv[sys.argv.index('--encoder') + 1] != 'none':  # those that take one
    from models.backbones import EncoderInput
    only = [f for f in only if issubclass(REGISTRY[f].network.Config, EncoderInput)]
print(' '.join(f for f in REGISTRY if f in only))" "$ONLY" "${COMMON[@]}") || exit $?
failed=()
# semantic interpretability: a classifier of the colour images, when the data has class folders
if [ -n "$FORCE" ] || [ ! -f "$RESULTS/classifier/classifier.pt" ]; then
  echo "== classifier (semantic interpretability)"
  $PY main.py --mode classifier "${COMMON[@]}" "${TRAIN_ONLY[@]}" > "$RESULTS/logs/classifier.log" 2>&1 \
    || { echo "   failed, see $RESULTS/logs/classifier.log"; failed+=(classifier); }
fi
for family in $families; do
  run=$family$SUFFIX
  if [ -z "$FORCE" ] && [ -f "$RESULTS/$run/metrics.json" ]; then
    echo "== $run: done before, skipped (--force to redo)"; continue
  fi
  # unetddim is unetddpm's network and training with another sampler: when this batch has trained
  # unetddpm, its checkpoint is tested with DDIM rather than the same network trained twice
  ddpm=$RESULTS/unetddpm$SUFFIX
  if [ "$family" = unetddim ] && [ -f "$ddpm/best.pt" ] && [ -f "$ddpm/metrics.json" ]; then
    echo "== $run: test (unetddpm$SUFFIX's checkpoint, DDIM sampling)"
    if ! $PY main.py --model "$family" --mode test --run_name "$run" --weights "$ddpm/best.pt" \
         "${COMMON[@]}" "${TEST_ONLY[@]}" > "$RESULTS/logs/$run.test.log" 2>&1; then
      echo "   failed, see $RESULTS/logs/$run.test.log"; failed+=("$run")
    fi
    continue
  fi
  how=(--overwrite)
  [ -z "$FORCE" ] && [ -f "$RESULTS/$run/last.pt" ] && how=(--resume)
  echo "== $run: train ${how[*]}"
  if ! $PY main.py --model "$family" --mode train --run_name "$run" "${how[@]}" "${COMMON[@]}" "${TRAIN_ONLY[@]}" \
       > "$RESULTS/logs/$run.train.log" 2>&1; then
    echo "   failed, see $RESULTS/logs/$run.train.log"; failed+=("$run"); continue
  fi
  echo "== $run: test"
  if ! $PY main.py --model "$family" --mode test --run_name "$run" "${COMMON[@]}" "${TEST_ONLY[@]}" \
       > "$RESULTS/logs/$run.test.log" 2>&1; then
    echo "   failed, see $RESULTS/logs/$run.test.log"; failed+=("$run"); continue
  fi
done
if $PY report.py summary "$RESULTS" > "$RESULTS/logs/report.log" 2>&1; then
  echo "summary: $RESULTS/summary.md, summary.csv, index.html (open it in a browser)"
  grep '^warning' "$RESULTS/logs/report.log"  # run folders it skipped, and why
else
  echo "   the report failed, see $RESULTS/logs/report.log"; failed+=(report)
fi
if [ ${#failed[@]} -gt 0 ]; then
  echo "failed: ${failed[*]}" >&2
  exit 1
fi
