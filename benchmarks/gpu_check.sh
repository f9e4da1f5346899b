#!/usr/bin/env bash
# Issue 12, section 4: the device check, prepared for a session that is lent a GPU. NOT YET RUN (no GPU was
# lent when it was written). Needs, in the active Python on the GPU machine: this checkout installed with
# fgalign[verl] and vLLM (e.g. verl[vllm]==0.9.1). Order: micro pipeline with vLLM rollouts, vLLM vs HF
# throughput, two verl PPO steps with the plug-in, the test suite. Timings go to $OUT/times.txt.
#   OUT=runs/gpu-check bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-runs/gpu-check}"
mkdir -p "$OUT"
python -c "import torch, vllm, verl; assert torch.cuda.is_available(), 'no CUDA GPU'"

timed() {  # timed NAME CMD...: run, log to $OUT/NAME.log, append the wall time
  local name=$1 start
  shift
  start=$(date +%s)
  "$@" > "$OUT/$name.log" 2>&1 || { echo "$name: FAILED (see $OUT/$name.log)" | tee -a "$OUT/times.txt"; return 1; }
  echo "$name: $(( $(date +%s) - start )) s" | tee -a "$OUT/times.txt"
}

# 1. the micro pipeline with vLLM rollouts (weights synced after every update)
timed micro_pipeline_vllm fgalign pipeline --config configs/micro.yaml --out "$OUT/micro" --rollout vllm

# 2. rollout throughput, side by side on the micro SFT policy (tokens/s; JSON at the end of the log)
timed rollout_throughput python benchmarks/rollout_throughput.py --model "$OUT/micro/sft" --batch 64 \
  --max-new-tokens 64

# 3. two verl PPO steps with fgalign's token RM: the micro policy with a pass-through chat template (verl
#    applies one; this one leaves fgalign's plain prompts as they are)
python - "$OUT" <<'PY'
import shutil, sys
from transformers import AutoTokenizer
out = sys.argv[1]
shutil.copytree(f"{out}/micro/sft", f"{out}/policy-chat", dirs_exist_ok=True)
tok = AutoTokenizer.from_pretrained(f"{out}/policy-chat")
tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
tok.save_pretrained(f"{out}/policy-chat")
PY
python examples/verl/prepare_data.py --in "$OUT/micro/edits.jsonl" --out "$OUT/verl-data" --val 16
timed verl_two_steps env POLICY="$OUT/policy-chat" RM="$OUT/micro/rm-token" DATA="$OUT/verl-data" GPUS_PER_NODE=1 \
  bash examples/verl/run_fgalign_ppo.sh trainer.total_training_steps=2 trainer.val_before_train=false \
  trainer.test_freq=-1 trainer.save_freq=-1 data.train_batch_size=16 data.max_prompt_length=64 \
  data.max_response_length=32 actor_rollout_ref.model.use_remove_padding=false \
  actor_rollout_ref.actor.ppo_mini_batch_size=16 actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4 \
  critic.ppo_micro_batch_size_per_gpu=4 actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8 \
  actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=8 actor_rollout_ref.rollout.gpu_memory_utilization=0.3 \
  actor_rollout_ref.rollout.agent.num_workers=1 reward.num_workers=1

# 4. the test suite
timed test_suite make test
cat "$OUT/times.txt"
