#!/usr/bin/env bash
# Every CUDA path of segbench, once, on the GPU(s) of this machine, in at most 8 minutes; then one table:
# path | ran or skipped (why) | figure.
#
#   bash benches/gpu_check.sh            # from a clone, with segbench installed (pip install -e .)
#
# Paths: bf16 and fp16 training with channels_last, resume after SIGTERM, slide evaluation with the passport on the
# device, `segbench bench` with CUDA events and peak memory (fp16, channels_last), torchrun with NCCL (2 GPUs or
# more), ONNX Runtime's CUDA provider and TensorRT (where installed). Without a CUDA device every row says skipped
# and the script exits 0. Each step has its own time limit; a failed step shows FAILED with its last line, and the
# script exits 1. Logs and outputs stay in $GPU_CHECK_DIR (default: a fresh temporary folder).
set -uo pipefail

WORK="${GPU_CHECK_DIR:-$(mktemp -d -t segbench-gpu-check-XXXXXX)}"
mkdir -p "$WORK"
PY="${PYTHON:-python}"
# the installed console script, else the package on PYTHONPATH
if command -v segbench >/dev/null 2>&1; then SB=(segbench); else SB=("$PY" -m segbench); fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
ROWS=()
FAILED=0
# a small, fast suite on the GPU: synthetic scenes, one model, no tracking server; the training scenes are drawn on
# the CPU (16.5 ms each at 256x256 on one core), so four loader workers keep the GPU fed
COMMON=(models=[unet-resnet18] data.image_size=256 data.train_samples=256 data.val_samples=32 train.batch_size=8
        eval.batch_size=8 data.num_workers=4 bench.enabled=false tracking.enabled=false progress=false device=cuda)

row() { ROWS+=("$1|$2|$3"); }

# figure FILE EXPRESSION: a Python expression over r (the JSON file), printed
figure() { "$PY" - "$1" "$2" <<'EOF' 2>/dev/null || echo "-"
import json, sys
r = json.load(open(sys.argv[1]))
m = r["models"][0]
print(eval(sys.argv[2]))
EOF
}

# step NAME SECONDS LOG COMMAND...: run with a time limit; 0 on success, else a FAILED row
BUDGET=${GPU_CHECK_SECONDS:-480}  # the whole check: 8 minutes; a step gets at most what is left
step() {
  local name=$1 limit=$2 log=$3; shift 3
  local left=$((BUDGET - SECONDS))
  if [ $left -lt 20 ]; then row "$name" "skipped (the ${BUDGET}s budget is spent)" "-"; return 2; fi
  [ $left -lt "$limit" ] && limit=$left
  timeout --signal=TERM "$limit" "$@" >"$log" 2>&1
  local code=$?
  if [ $code -ne 0 ]; then
    local why; why=$(grep -v '^\s*$' "$log" | tail -1 | cut -c1-120)
    [ $code -eq 124 ] && why="over ${limit}s"
    row "$name" "FAILED (exit $code: $why)" "-"
    FAILED=1
  fi
  return $code
}

GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)" 2>/dev/null \
       || echo 0)

if [ "$GPUS" -eq 0 ]; then
  for path in "train bf16 channels_last" "train fp16 channels_last" "resume after SIGTERM" \
              "slide eval, passport on cuda" "bench: cuda events, peak memory" "torchrun NCCL" \
              "onnxruntime CUDA provider" "TensorRT"; do
    row "$path" "skipped (no CUDA device)" "-"
  done
else
  # 1, 2: mixed-precision training in channels-last format (~60 s each)
  for p in bf16 fp16; do
    out="$WORK/train-$p"
    if step "train $p channels_last" 150 "$WORK/train-$p.log" "${SB[@]}" run "${COMMON[@]}" train.iters=200 \
         "train.precision=$p" train.channels_last=true "eval.precision=$p" eval.channels_last=true \
         eval.passport=false "output_dir=$out"; then
      row "train $p channels_last" "ran" "$(figure "$out/results.json" \
        "f\"{m['train']['iters'] / m['train']['seconds']:.1f} it/s (data wait {100 * m['train']['data_wait_share']:.0f} %), loss {m['train']['final_loss']:.3f}, mIoU {100 * m['metrics']['mIoU']:.2f}\"")"
    fi
  done

  # 3: resume: SIGTERM once the first state is written, then resume=auto (~60 s)
  out="$WORK/resume"
  "${SB[@]}" run "${COMMON[@]}" train.iters=300 train.checkpoint_every=50 train.precision=bf16 eval.passport=false \
    "output_dir=$out" >"$WORK/resume-1.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 600); do [ -f "$out.partial/state/unet-resnet18.pt" ] && break; kill -0 $pid 2>/dev/null || break
                            sleep 0.1; done
  kill -TERM $pid 2>/dev/null
  wait $pid
  first=$?
  if [ $first -ne 143 ]; then
    row "resume after SIGTERM" "FAILED (first run exit $first, expected 143)" "-"; FAILED=1
  elif step "resume after SIGTERM" 150 "$WORK/resume-2.log" "${SB[@]}" run "${COMMON[@]}" train.iters=300 \
         train.checkpoint_every=50 train.precision=bf16 eval.passport=false "output_dir=$out" resume=auto; then
    row "resume after SIGTERM" "ran" "$(figure "$out/results.json" \
      "f\"resumed at {m['train']['resumed_at']}, mIoU {100 * m['metrics']['mIoU']:.2f}\"")"
  fi

  # 4: slide evaluation at 1024x2048 with the passport (boundary, calibration) on the device (~30 s)
  out="$WORK/slide"
  if step "slide eval, passport on cuda" 120 "$WORK/slide.log" "${SB[@]}" run "${COMMON[@]}" train.enabled=false \
       data.image_size=1024 data.val_samples=8 eval.batch_size=1 eval.mode=slide eval.window=[512,512] \
       eval.stride=[384,384] eval.passport=true eval.precision=fp16 eval.channels_last=true "output_dir=$out"; then
    row "slide eval, passport on cuda" "ran" "$(figure "$out/results.json" \
      "f\"{m['evaluation']['images_per_second']:.2f} img/s end to end, forward share {m['evaluation']['forward_share']:.2f}\"")"
  fi

  # 5: segbench bench: CUDA events and peak memory, fp16 channels_last, 512x1024 (~40 s)
  out="$WORK/bench"
  if step "bench: cuda events, peak memory" 120 "$WORK/bench.log" "${SB[@]}" bench models=[unet-resnet18] device=cuda \
       bench.input_size=[512,1024] bench.batch_sizes=[1,8] bench.precision=fp16 bench.channels_last=true \
       tracking.enabled=false progress=false "output_dir=$out"; then
    row "bench: cuda events, peak memory" "ran" "$("$PY" - "$out/bench.json" <<'EOF' 2>/dev/null || echo "-"
import json, sys
speed = json.load(open(sys.argv[1]))["models"][0]["speed"]
print("; ".join(f"b{s['batch_size']} {s['images_per_second']:.0f} img/s {s['peak_memory_mb']:.0f} MB ({s['timer']})"
                for s in speed))
EOF
)"
  fi

  # 6: torchrun with NCCL: evaluation over 2 GPUs, one process each (~40 s)
  if [ "$GPUS" -lt 2 ]; then
    row "torchrun NCCL" "skipped (1 GPU: NCCL needs one process per GPU, 2 or more)" "-"
  else
    out="$WORK/torchrun"
    if step "torchrun NCCL" 150 "$WORK/torchrun.log" torchrun --standalone --nproc_per_node=2 -m segbench run \
         "${COMMON[@]}" train.iters=50 data.val_samples=64 "output_dir=$out"; then
      row "torchrun NCCL" "ran" "$(figure "$out/results.json" \
        "f\"2 ranks: {m['evaluation']['images_per_second']:.1f} img/s eval, per rank {[round(x, 1) for x in m['evaluation']['images_per_second_per_rank']]}\"")"
    fi
  fi

  # 7, 8: deployment backends on the GPU, where installed (~60 s each)
  for backend in onnxruntime tensorrt; do
    name=$([ $backend = onnxruntime ] && echo "onnxruntime CUDA provider" || echo "TensorRT")
    module=$([ $backend = onnxruntime ] && echo onnxruntime || echo tensorrt)
    if ! "$PY" -c "import $module" 2>/dev/null; then
      row "$name" "skipped ($module not installed)" "-"; continue
    fi
    if [ $backend = onnxruntime ] && ! "$PY" -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())"; then
      row "$name" "skipped (onnxruntime without CUDAExecutionProvider: install onnxruntime-gpu)" "-"; continue
    fi
    out="$WORK/$backend"
    if step "$name" 150 "$WORK/$backend.log" "${SB[@]}" bench models=[unet-resnet18] device=cuda \
         bench.input_size=[512,1024] bench.batch_sizes=[1] "bench.backends=[eager,$backend]" bench.isolate=false \
         tracking.enabled=false progress=false "output_dir=$out"; then
      row "$name" "ran" "$("$PY" - "$out/bench.json" "$backend" <<'EOF' 2>/dev/null || echo "-"
import json, sys
model = json.load(open(sys.argv[1]))["models"][0]
speed = {s.get("backend") or "eager": s for s in model["speed"]}
if sys.argv[2] not in speed:
    print("not timed: " + "; ".join(str(s) for s in model.get("speed_skipped") or [])[:100])
else:
    s = speed[sys.argv[2]]
    print(f"{s['images_per_second']:.0f} img/s ({s.get('provider')}) vs eager {speed['eager']['images_per_second']:.0f}")
EOF
)"
    fi
  done
fi

printf '\n%-34s | %-60s | %s\n' "path" "ran or skipped (why)" "figure"
printf '%s\n' "$(printf -- '-%.0s' $(seq 1 140))"
for r in "${ROWS[@]}"; do
  IFS='|' read -r path status fig <<<"$r"
  printf '%-34s | %-60s | %s\n' "$path" "$status" "$fig"
done
echo "GPUs: $GPUS; logs and outputs in $WORK"
exit $FAILED
