#!/usr/bin/env bash
# A lent GPU's work for the paper-scale benchmarks, as ONE device command (at most 575 s).
#
# Prepare here (once): the CIFAR-10 copy and the wheels of what the device's image lacks
# (jsonargparse[signatures], for `natmu-lightning fit`; /work/.library/device/KINDS.md lists the
# image's packages) travel in an ignored folder, about 57 MiB with the working tree (limit 64):
#   echo /gpu_data/ >> .git/info/exclude; mkdir -p gpu_data; cp ../shared/data/cifar10_jpeg.npz gpu_data/
#   python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 -d gpu_data/wheels \
#     jsonargparse==4.53.0 docstring-parser==0.18.0 typeshed-client==2.15.0
# Then the device tool's run: carry ["gpu_data"], timeout_s 590, command
#   bash benchmarks/gpu_session.sh
# and commit what comes back ($OUT/*.json) under benchmarks/results/gpu/; RESULTS.md's tables come
# from those files through benchmarks/render.py (paper_table for paper.json, gpu_fast_table for
# gpu_fast.json: add a TABLES entry and a <!-- render: NAME --> block). paper.json is written after
# each phase and, when the time limit stops the command, says in `stopped` how far the unfinished
# runs got; $OUT/paper_runs.tar.gz holds each run's log, metrics.csv and final metrics. $OUT holds
# at most 8 files (8 come back): device.csv, gpu_util.csv (utilisation and memory every 2 s),
# step_overhead.json, paper.json, overhead_log.txt, overhead_err.txt, paper_runs.tar.gz, and
# paper_first_try.json when a first try failed.
# Check the script itself on a CPU first (synthetic data, seconds per phase), and its time limit:
#   OUT=/tmp/gpu_session bash benchmarks/gpu_session.sh --dry-run
#   GPU_SESSION_BUDGET=70 OUT=/tmp/gpu_stopped bash benchmarks/gpu_session.sh --dry-run  # paper.json: stopped
#   OUT=/tmp/gpu_fast bash benchmarks/gpu_session.sh --fast --dry-run
# With --fast it runs only benchmarks/gpu_fast.py (issue 29 point 3: bf16-mixed, channels-last,
# torch.compile, each timed against 32-true) and brings back gpu_fast.json and gpu_fast_log.txt:
# a second call, at once while the machine is warm (it is given back after 30 s idle), with
# GPU_SESSION_BUDGET set to the device time left minus a minute, e.g. command
#   GPU_SESSION_BUDGET=180 bash benchmarks/gpu_session.sh --fast   (timeout_s 200, carry ["gpu_data"])
#
# 1. benchmarks/step_overhead.py on VGG-16 (remaining and NatMU streams, 2 epochs, 1 round):
#    bare PyTorch vs Lightning's floor vs this package, with the training set on the GPU.
# 2. benchmarks/paper.py: CIFAR-10 VGG-16 random 1%, Original and Retrain side by side, then
#    NatMU and the nine baselines side by side; paper.json. Original and Retrain train the paper's
#    100 epochs when, at the step time of 1., the whole table is estimated to fit in the time left;
#    else fewer (at least 10), so that the session can still return a whole table; paper.json's
#    classifier_epochs says which, with the estimate. Without a usable step time from 1., 10 epochs.
#    When a run fails with at least 180 s left, once more with 10 epochs on the loader path (a
#    check of that path and the rows that finish in the time left).
set -uo pipefail
dry_run=
fast=
for arg in "$@"; do
  case "$arg" in
    --dry-run) dry_run=1 ;;
    --fast) fast=1 ;;
    *) echo "gpu_session.sh: unknown argument $arg (it takes --dry-run and --fast)"; exit 2 ;;
  esac
done
budget="${GPU_SESSION_BUDGET:-575}"  # seconds for the whole script, inside the device call's 590
py="${PYTHON:-$(command -v python3 || command -v python)}"
out="${OUT:-runs/gpu_session}"
mkdir -p "$out" "${TMPDIR:-/tmp}"
out="$(cd "$out" && pwd)" || exit 1
work="$(mktemp -d "${TMPDIR:-/tmp}/natmu_gpu_session.XXXXXX")"  # a rerun on a warm machine starts afresh
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export NATMU_CIFAR10_NPZ="${NATMU_CIFAR10_NPZ:-$PWD/gpu_data/cifar10_jpeg.npz}"
wheels="import jsonargparse, docstring_parser, typeshed_client"
if ! "$py" -c "$wheels" 2>/dev/null; then  # the device's image: install the carried wheels
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    gpu_data/wheels/*.whl && export PYTHONPATH="/tmp/site:$PYTHONPATH" \
    || { echo "jsonargparse missing and gpu_data/wheels/*.whl not installable (see this script's header)"; exit 1; }
fi
"$py" -c "$wheels; import jsonargparse, sklearn, torchmetrics, pytorch_lightning, torch
print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'lightning', pytorch_lightning.__version__,
      'jsonargparse', jsonargparse.__version__)" || exit 1

# the time left for a step (20 s kept for the copies that follow; at least 10: `timeout 0` is no limit)
time_left() { local left=$((budget - SECONDS - 20)); echo $((left < 10 ? 10 : left)); }

if [ -n "$fast" ]; then  # a second call: only benchmarks.gpu_fast, in the budget (the variants in order)
  left=$(time_left)
  echo "gpu_fast gets $left s at $(date +%T)"
  # gpu_fast.json is written into $OUT after each variant: kept if a time limit stops the command
  timeout -k 10 "$left" "$py" -m benchmarks.gpu_fast --out "$out" --work "$work/fast" ${dry_run:+--dry-run} 2>&1 \
    | grep -av --line-buffered "it/s" | tee "$work/fast.log"
  code=${PIPESTATUS[0]}
  tail -c 20000 "$work/fast.log" >"$out/gpu_fast_log.txt"
  rm -rf "$work"
  if [ "$code" -eq 124 ] && [ -f "$out/gpu_fast.json" ]; then
    echo "gpu_fast stopped by the time limit: gpu_fast.json holds the variants it finished"
    code=0
  fi
  echo "gpu_session.sh: $SECONDS s"
  exit "$code"
fi

status=0
monitor=
stop_monitor() {  # SIGTERM (a background job ignores SIGINT), then wait: nothing left running
  [ -z "$monitor" ] || { kill "$monitor" 2>/dev/null; wait "$monitor" 2>/dev/null; monitor=; }
}
trap stop_monitor EXIT
if command -v nvidia-smi >/dev/null; then
  # how busy the GPU is, every 2 s, through both parts (the output's "at HH:MM:SS" lines place
  # them); line-buffered, so that the samples before the stop are in the file
  line_buffered=()
  ! command -v stdbuf >/dev/null || line_buffered=(stdbuf -oL)
  ${line_buffered[@]+"${line_buffered[@]}"} nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used \
    --format=csv -l 2 >"$out/gpu_util.csv" 2>/dev/null &
  monitor=$!
fi
echo "step overhead at $(date +%T)"
overhead=(--streams remain hybrid --epochs 2 --repeats 1 --out "$work/overhead")
if [ -n "$dry_run" ]; then
  "$py" -m benchmarks.step_overhead "${overhead[@]}" >"$work/overhead.log" 2>"$work/overhead.err" || status=1
  data=(--dry-run)
else
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$out/device.csv" || true
  timeout 100 "$py" -m benchmarks.step_overhead --preset cifar10-vgg16 --device cuda "${overhead[@]}" \
    >"$work/overhead.log" 2>"$work/overhead.err" || status=1
  data=(--cifar10-npz "$NATMU_CIFAR10_NPZ")
fi
grep -a "stream\|bare .* ms" "$work/overhead.log"  # the summary lines, not the progress bars
cp "$work/overhead/step_overhead.json" "$out/" 2>/dev/null  # at once: kept if the rest is cut short

# the paper's table in the time left
run_paper() {  # benchmarks.paper on the session's data in the time left; its exit code in $code
  local left
  left=$(time_left)
  echo "paper.py gets $left s at $(date +%T): $*"
  timeout -k 10 "$left" "$py" -m benchmarks.paper "${data[@]}" "$@"
  code=$?
  echo "paper.py ended at $(date +%T) (${SECONDS} s), exit code $code"
}
if [ -f "$work/overhead/step_overhead.json" ]; then
  plan=(--fit-in "$(($(time_left) - 10))" --step-overhead "$work/overhead/step_overhead.json")
else
  plan=(--classifier-epochs 10)
fi
paper_dir="$work/paper"
run_paper --out "$paper_dir" "${plan[@]}"
if [ "$code" -eq 2 ]; then  # its arguments refused (the step time unusable), before any training
  run_paper --out "$paper_dir" --classifier-epochs 10
fi
first_try=()
if [ "$code" -eq 1 ] && grep -q '"failed"' "$paper_dir/paper.json" 2>/dev/null && [ $((budget - SECONDS)) -ge 180 ]; then
  # a run failed early (paper.json says so; not the time limit, 124, nor input refused before any
  # run): once more, 10 epochs, batches through the DataLoader from host memory (the path GPU runs
  # took before device residency, which no GPU has run yet). In the time left this checks that
  # path and returns the rows that finish, rarely a whole table. The first try's paper.json comes
  # back too, with the error, and its logs in the archive (first_try_logs/).
  cp "$paper_dir/paper.json" "$out/paper_first_try.json" 2>/dev/null
  mv "$paper_dir/logs" "$work/first_try_logs" 2>/dev/null && first_try=(-C "$work" first_try_logs)
  paper_dir="$work/paper_loader_path"
  echo "paper.py failed: once more on the loader path"
  run_paper --out "$paper_dir" --classifier-epochs 10 --loader-path
fi
[ "$code" -eq 0 ] || status=1

stop_monitor
echo "GPU monitor stopped at $(date +%T) (${SECONDS} s)"
cp "$paper_dir/paper.json" "$out/" 2>/dev/null
# each run's log, metrics.csv and final metrics (how far a run stopped by the time limit got, why one
# failed) in one archive: at most 8 files come back from $OUT
(cd "$paper_dir" 2>/dev/null && tar czf "$out/paper_runs.tar.gz" logs \
  $(ls -d work/runs/*/*/*/version_*/{metrics.csv,unlearning_metrics.json} 2>/dev/null) \
  ${first_try[@]+"${first_try[@]}"})
tail -c 20000 "$work/overhead.err" >"$out/overhead_err.txt" 2>/dev/null
grep -av "it/s" "$work/overhead.log" | tail -c 20000 >"$out/overhead_log.txt" 2>/dev/null
echo "files copied at $(date +%T) (${SECONDS} s)"  # with run_paper's and the monitor's: where the time went
[ -n "${KEEP_WORK:-}" ] || rm -rf "$work"  # the runs' checkpoints: gigabytes (KEEP_WORK=1 keeps them)
echo "gpu_session.sh: $SECONDS s"
exit $status
