#!/bin/bash
# The GPU checks, one log: the machine, the training suite, training throughput at 640x192
# (input paths x precision, torch.compile), where a step's time goes (torch.profiler), every
# method's step, fp32 vs bf16 over 300 steps, determinism, evaluation and prediction speed,
# inference speed.
#
#     bash benchmarks/device_checks.sh OUT_DIR [SECTION ...]     # on a CUDA machine
#     DEVICE=cpu QUICK=1 bash benchmarks/device_checks.sh OUT_DIR SECTION ...   # tiny, on a CPU
#
# Sections (default: all, longer than one 10-minute device call; each section's time limit
# is an upper bound). In order of need, three calls:
#     machine profile throughput throughput_bf16
#     suite evaluation training_checks
#     methods inference compiled
# `world` (2 drives x 60 frames, written in about 40 s) is added where a later section needs
# it. Each section runs under its own time limit (one that fails or runs out of time is
# reported and the next one runs); everything goes to OUT_DIR/checks.log. The evaluation's
# 697-image split lists the world's 29 test frames over and over (every image is read and
# decoded each time). `suite` runs the tests last, on all cores but two.
set -u
SECTION=""; W=""
if [ "${1:-}" = --section ]; then SECTION=$2; W=$3; shift 3; fi
OUT=${1:?usage: device_checks.sh OUT_DIR [SECTION ...]}
shift
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
SCRIPT=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
cd "$(dirname "$0")/.."
[ -n "$W" ] || W=$(mktemp -d)

if [ -n "$QUICK" ]; then
    CFG=320x96; H=96; WD=320; B=4; STEPS=3; WARM=1; LONG=6; SHORT=4; NIMG=20; NEVAL=40; DRIVES=2; FRAMES=12; T=4
else
    CFG=640x192; H=192; WD=640; B=12; STEPS=30; WARM=5; LONG=300; SHORT=100; NIMG=200; NEVAL=697; DRIVES=2; FRAMES=60; T=1
fi
NOCUDA=(); [ "$DEVICE" = cpu ] && NOCUDA=(--no_cuda)
CORES=$(nproc)

section() {  # section TITLE SECONDS FUNCTION ARGS...: the function in a child, under a time limit
    local title=$1 secs=$(( $2 * T )); shift 2
    echo; echo "=== $(date -u +%T) $title (limit ${secs} s)"
    local t0=$SECONDS
    timeout -k 10 "$secs" bash "$SCRIPT" --section "$1" "$W" "$OUT" "${@:2}"
    echo "=== $title: exit $? after $(( SECONDS - t0 )) s"
}

machine() {
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null
    $PY - "$DEVICE" <<'EOF'
import sys, time, torch
dev = sys.argv[1]
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())
if dev == "cuda":
    print("device", torch.cuda.get_device_name(0))
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for dtype, name, tf32 in ((torch.bfloat16, "bf16", False), (torch.float32, "fp32 with TF32", True),
                              (torch.float32, "fp32 (TF32 off)", False)):
        x, y = a.to(dtype), b.to(dtype)
        torch.backends.cuda.matmul.allow_tf32 = tf32
        for _ in range(3):
            x @ y
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(10):
            x @ y
        torch.cuda.synchronize()
        print(f"matrix product {n}^3 {name}: {2 * n ** 3 * 10 / (time.perf_counter() - t) / 1e12:.0f} TFLOP/s")
EOF
}

world() {
    $PY -m synthetic_world --out "$W/world" --drives $DRIVES --frames $FRAMES --jpg --workers "$CORES" >/dev/null
    # the evaluation split: NEVAL lines cycling through the test frames
    local s="$W/world/splits"
    mkdir -p "$s/eval_many"
    local t0=$SECONDS
    $PY export_gt_depth.py --data_path "$W/world" --split synthetic | tail -1
    echo "export_gt_depth over the test frames: $(( SECONDS - t0 )) s"
    $PY - "$s/synthetic" "$s/eval_many" $NEVAL <<'EOF'
import os, sys
import numpy as np
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
lines = open(os.path.join(src, "test_files.txt")).read().splitlines()
gts = np.load(os.path.join(src, "gt_depths.npz"), allow_pickle=True)["data"]
open(os.path.join(dst, "test_files.txt"), "w").write("".join(lines[i % len(lines)] + "\n" for i in range(n)))
tiled = np.empty(n, dtype=object)
tiled[:] = [gts[i % len(gts)] for i in range(n)]
np.savez_compressed(os.path.join(dst, "gt_depths.npz"), data=tiled)
EOF
    wc -l "$s/synthetic/train_files.txt" "$s/synthetic/test_files.txt" "$s/eval_many/test_files.txt"
}

throughput() {  # the default path, the fast loader, nvJPEG decode and the ceiling; fp32 and bf16
    $PY benchmarks/train_throughput.py --data_path "$W/world" --configs $CFG --steps $STEPS --warmup $WARM \
        --device "$DEVICE" --paths default fast device_decode ceiling "$@"
}

profile() {  # where the ceiling step's time goes, fp32 then bf16 + channels-last
    $PY benchmarks/step_profile.py --data_path "$W/world" --device "$DEVICE" --height $H --width $WD \
        --batch_size $B --steps 5 --warmup 5 --top 15
    $PY benchmarks/step_profile.py --data_path "$W/world" --device "$DEVICE" --height $H --width $WD \
        --batch_size $B --steps 5 --warmup 5 --top 15 --amp bf16 --channels_last
}

compiled() {
    $PY benchmarks/train_throughput.py --data_path "$W/world" --configs $CFG --steps $STEPS --warmup $WARM \
        --device "$DEVICE" --paths fast ceiling --amp bf16 --channels_last --compile
}

one_method() {  # one method's ceiling step, fp32 then bf16 + channels-last
    throughput_args=(--data_path "$W/world" --configs $CFG --steps $((STEPS / 3 + 1)) --warmup 3 --device "$DEVICE"
                     --paths ceiling --methods "$1")
    $PY benchmarks/train_throughput.py "${throughput_args[@]}" | grep "^|.*$CFG"
    $PY benchmarks/train_throughput.py "${throughput_args[@]}" --amp bf16 --channels_last | grep "^|.*$CFG" | sed 's/$/ bf16/'
}

methods() {
    echo "| configuration | method | input path | device | examples/s | data wait % | peak memory MiB |"
    # each in its paper's architecture (BDEdepth and MISM's single-frame network: HRNet-18), 640x192, batch 12
    for m in monodepth2 srd "bdedepth --encoder hrnet18 --depth_decoder grid --use_local_crop --use_patch_reshuffle" \
             manydepth "mism_teacher --snet hrnet"; do
        one_method "$m"
    done
}

train_run() {  # train_run NAME STEPS FLAGS...: mono Monodepth2 from scratch on the world
    local name=$1 steps=$2; shift 2
    $PY train.py --data_path "$W/world" --split "$W/world/splits/synthetic" --png --height $H --width $WD \
        --batch_size $B --weights_init scratch --num_epochs 1000 --max_steps "$steps" --num_workers 2 --fast_loader \
        --log_dir "$W/runs" --model_name "$name" --no_progress --log_frequency 100000 "${NOCUDA[@]}" "$@" \
        > "$W/$name.out" 2>&1
    echo "$name: exit $? $(tail -1 "$W/$name.out")"
}

steps_report() {
    $PY - "$W/runs" <<'EOF'
import json, os, sys
root = sys.argv[1]
def losses(name):
    path = os.path.join(root, name, "train_steps.jsonl")
    return [json.loads(l)["loss"] for l in open(path)] if os.path.exists(path) else []
def val(name):
    path = os.path.join(root, name, "metrics.jsonl")
    rows = [json.loads(l) for l in open(path)] if os.path.exists(path) else []
    return rows[-1].get("abs_rel") if rows else None
fp, bf = losses("amp_fp32"), losses("amp_bf16")
if fp and bf:
    n = min(len(fp), len(bf)); w = max(n // 6, 1)
    print("fp32 vs bf16, mean loss per window of", w, "steps (relative difference):")
    for i in range(0, n - w + 1, w):
        a, b = sum(fp[i:i + w]) / w, sum(bf[i:i + w]) / w
        print(f"  steps {i}-{i + w - 1}: fp32 {a:.4f}  bf16 {b:.4f}  ({100 * (b - a) / a:+.1f} %)")
    print(f"  last validation abs_rel: fp32 {val('amp_fp32')}  bf16 {val('amp_bf16')}")
for pair in (("det_a", "det_b"), ("free_a", "free_b")):
    a, b = losses(pair[0]), losses(pair[1])
    if a and b:
        n = min(len(a), len(b))
        diffs = [abs(x - y) for x, y in zip(a[:n], b[:n])]
        first = next((i for i, d in enumerate(diffs) if d > 0), None)
        print(f"{pair[0][:-2]}: {n} steps, identical losses: {diffs == [0.0] * n}, first differing step {first}, "
              f"max |diff| {max(diffs):.3g}, last losses {a[n - 1]:.6f} / {b[n - 1]:.6f}")
EOF
}

training_checks() {  # fp32 vs bf16 (LONG steps) and determinism (SHORT steps): six runs at once
    train_run amp_fp32 $LONG &
    train_run amp_bf16 $LONG --amp bf16 --channels_last &
    train_run det_a $SHORT --deterministic &
    train_run det_b $SHORT --deterministic &
    train_run free_a $SHORT &
    train_run free_b $SHORT &
    wait
    steps_report
}

suite() {  # after the timed sections (it shares the GPU and the cores): all but 2 cores
    local n=$(( CORES > 3 ? CORES - 2 : 1 ))
    local args=(-q -p no:cacheprovider)
    if [ -n "$QUICK" ]; then args+=(tests/test_inference_speed.py)
    elif [ "$n" -gt 1 ] && $PY -c "import xdist" 2>/dev/null; then args+=(-n "$n"); fi
    local t0=$SECONDS
    $PY -m pytest "${args[@]}" > "$OUT/suite.log" 2>&1
    echo "test suite, $n processes: exit $? after $(( SECONDS - t0 )) s: $(tail -1 "$OUT/suite.log")"
    grep "^FAILED\|^ERROR" "$OUT/suite.log" | head -20
}

evaluation() {
    local weights
    weights=$(ls -d "$W"/runs/amp_fp32/models/weights_* 2>/dev/null | tail -1)
    [ -n "$weights" ] || { echo "no weights in $W/runs/amp_fp32/models"; return 1; }
    echo "weights: ${weights#$W/}"
    local t1=$SECONDS
    $PY evaluate_depth.py --load_weights_folder "$weights" --eval_mono --eval_split eval_many --data_path "$W/world" \
        --num_workers 8 "${NOCUDA[@]}" | tail -6
    echo "evaluate_depth over $NEVAL images $((SECONDS - t1)) s (loading included)"
    mkdir -p "$W/images"
    ls "$W"/world/*/*/image_02/data/*.jpg "$W"/world/*/*/image_03/data/*.jpg | head -$NIMG | \
        while read -r f; do cp "$f" "$W/images/$(echo "$f" | md5sum | cut -c1-10).jpg"; done
    t0=$SECONDS
    $PY test_simple.py --image_path "$W/images" --load_weights_folder "$weights" --output_dir "$W/pred" \
        "${NOCUDA[@]}" | tail -2
    echo "test_simple over $(ls "$W/images" | wc -l) images $((SECONDS - t0)) s (loading included)"
}

inference() {
    $PY benchmarks/inference_speed.py --device "$DEVICE" --sizes ${WD}x${H} --batches 1 16 \
        --repeats 20 --warmup 3 --json "$OUT/inference.json" "$@"
}

if [ -n "$SECTION" ]; then
    "$SECTION" "$@"
    exit $?
fi
exec > >(tee -a "$OUT/checks.log") 2>&1
ALL=(machine world profile throughput throughput_bf16 evaluation suite methods training_checks inference compiled)
WANT=("$@"); [ ${#WANT[@]} -gt 0 ] || WANT=("${ALL[@]}")
for name in "${WANT[@]}"; do
    [[ " ${ALL[*]} " == *" $name "* ]] || { echo "unknown section $name (sections: ${ALL[*]})"; exit 2; }
done
want() { [[ " ${WANT[*]} " == *" $1 "* ]]; }
needs_world=; for name in "${WANT[@]}"; do [[ " machine suite world inference " == *" $name "* ]] || needs_world=1; done
want machine && section machine 30 machine
{ want world || [ -n "$needs_world" ]; } && section world 90 world
want profile && section "where a step's time goes" 150 profile
want throughput && section "throughput, fp32" 200 throughput
want throughput_bf16 && section "throughput, bf16 + channels-last" 200 throughput --amp bf16 --channels_last
want training_checks && section "fp32 vs bf16, determinism" 180 training_checks
if want evaluation; then
    # the weights of the 300-step fp32 run (trained here when training_checks did not run)
    ls -d "$W"/runs/amp_fp32/models/weights_* >/dev/null 2>&1 || \
        section "weights to evaluate" 120 train_run amp_fp32 $LONG
    section evaluation 60 evaluation
fi
want methods && section "every method's step" 400 methods
want inference && section inference 120 inference --methods monodepth2 manydepth --backends eager torchscript compile onnxruntime
want compiled && section "throughput, bf16 + channels-last + torch.compile" 200 compiled
want suite && section "test suite" 420 suite
echo "=== $(date -u +%T) done"
