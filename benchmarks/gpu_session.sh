#!/usr/bin/env bash
# A lent GPU's work for the paper-scale benchmarks, as ONE device command (about 10 minutes).
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
# and commit what comes back ($OUT/*.json) under benchmarks/results/gpu/ (paper.json is written after
# each phase, so a time limit keeps the finished phase, and says in `stopped` how far the unfinished
# runs got; $OUT/paper_runs.tar.gz holds each run's log and metrics.csv). $OUT holds at most 6 files:
# device.csv, step_overhead.json, paper.json, overhead_log.txt, overhead_err.txt, paper_runs.tar.gz.
# Check the script itself on a CPU first (synthetic data, seconds per phase):
#   OUT=/tmp/gpu_session bash benchmarks/gpu_session.sh --dry-run
#
# 1. benchmarks/step_overhead.py on VGG-16 (remaining and NatMU streams, 2 epochs, 1 round):
#    bare PyTorch vs Lightning's floor vs this package, with the training set on the GPU.
# 2. benchmarks/paper.py: CIFAR-10 VGG-16 random 1%, Original and Retrain side by side, then
#    NatMU and the nine baselines side by side; paper.json. Original and Retrain train the paper's
#    100 epochs when, at the step time of 1., the whole table fits in 460 s; else fewer, so that
#    the session still returns a whole table (paper.json's classifier_epochs says which).
set -uo pipefail
out="${OUT:-runs/gpu_session}"
work="${TMPDIR:-/tmp}/natmu_gpu_session/$(date +%Y%m%d-%H%M%S)"  # a rerun on a warm machine starts afresh
mkdir -p "$out" "$work"
out="$(cd "$out" && pwd)"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export NATMU_CIFAR10_NPZ="${NATMU_CIFAR10_NPZ:-$PWD/gpu_data/cifar10_jpeg.npz}"
status=0
if ! python -c "import jsonargparse" 2>/dev/null; then  # the device's image: install the carried wheels
  python -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site gpu_data/wheels/*.whl \
    && export PYTHONPATH="/tmp/site:$PYTHONPATH" || { echo "jsonargparse missing and gpu_data/wheels not installable"; exit 1; }
fi
python -c "import jsonargparse, sklearn, torchmetrics, pytorch_lightning, torch; print('torch', torch.__version__, \
  'cuda', torch.cuda.is_available(), 'lightning', pytorch_lightning.__version__, 'jsonargparse', jsonargparse.__version__)" \
  || exit 1
if [ "${1:-}" = "--dry-run" ]; then
  python -m benchmarks.step_overhead --out "$work/overhead" --streams remain hybrid --epochs 2 --repeats 1 \
    >"$work/overhead.log" 2>"$work/overhead.err" || status=1
  grep -a "stream\|bare .* ms" "$work/overhead.log"
  plan=()
  [ -f "$work/overhead/step_overhead.json" ] && plan=(--fit-in 460 --step-overhead "$work/overhead/step_overhead.json")
  python -m benchmarks.paper --dry-run --out "$work/paper" ${plan[@]+"${plan[@]}"} || status=1
else
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$out/device.csv" || true
  timeout 100 python -m benchmarks.step_overhead --preset cifar10-vgg16 --device cuda --streams remain hybrid \
    --epochs 2 --repeats 1 --out "$work/overhead" >"$work/overhead.log" 2>"$work/overhead.err" || status=1
  grep -a "stream\|bare .* ms" "$work/overhead.log"  # the summary lines, not the progress bars
  # the original's and Retrain's epochs: the paper's 100 if the whole table fits in the time left at the
  # VGG-16 step time just measured, else fewer (recorded in paper.json; RESULTS.md must say so)
  plan=()
  [ -f "$work/overhead/step_overhead.json" ] && plan=(--fit-in 460 --step-overhead "$work/overhead/step_overhead.json")
  timeout 470 python -m benchmarks.paper --cifar10-npz "$NATMU_CIFAR10_NPZ" --out "$work/paper" ${plan[@]+"${plan[@]}"} \
    || status=1
fi
cp "$work/overhead/step_overhead.json" "$work/paper/paper.json" "$out/" 2>/dev/null
# each run's log and metrics.csv (how far a run stopped by the time limit got, why one failed) in one
# archive: at most 8 files come back from $OUT
(cd "$work/paper" 2>/dev/null && tar czf "$out/paper_runs.tar.gz" logs $(ls -d work/runs/*/*/*/version_*/metrics.csv 2>/dev/null))
tail -c 20000 "$work/overhead.err" >"$out/overhead_err.txt" 2>/dev/null
grep -av "it/s" "$work/overhead.log" | tail -c 20000 >"$out/overhead_log.txt" 2>/dev/null
exit $status
