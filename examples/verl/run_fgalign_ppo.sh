#!/usr/bin/env bash
# Fine-grained PPO on verl with fgalign's token reward model (examples/verl/fgalign_ppo.yaml).
#
#   POLICY=runs/sft-7b RM=runs/rm-token DATA=runs/verl-data bash examples/verl/run_fgalign_ppo.sh [overrides...]
#
# One node: runs as is (verl starts a local Ray cluster). Several nodes: start Ray first, the same checkout
# and environment (fgalign[verl], vLLM) on every node, then run this on the head node with NNODES set:
#   head:    ray start --head --port 6379
#   others:  ray start --address HEAD_IP:6379
#   head:    NNODES=2 POLICY=... RM=... DATA=... bash examples/verl/run_fgalign_ppo.sh
# Extra arguments are Hydra overrides, e.g. reward.reward_kwargs.fgalign.reward=token-shaped.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
: "${POLICY:?set POLICY to the SFT policy directory}"
: "${RM:?set RM to an fgalign reward model directory (fgalign train-rm)}"
DATA="${DATA:-runs/verl-data}"
REWARD="${REWARD:-token}"

python -m verl.trainer.main_ppo --config-path "$HERE" --config-name fgalign_ppo \
  data.train_files="$(realpath "$DATA/train.parquet")" data.val_files="$(realpath "$DATA/val.parquet")" \
  actor_rollout_ref.model.path="$(realpath "$POLICY")" \
  actor_rollout_ref.rollout.agent.agent_loop_config_path="$HERE/agent_loops.yaml" \
  reward.reward_kwargs.fgalign.rm="$(realpath "$RM")" reward.reward_kwargs.fgalign.reward="$REWARD" \
  trainer.nnodes="${NNODES:-1}" trainer.n_gpus_per_node="${GPUS_PER_NODE:-8}" \
  trainer.experiment_name="ppo-$REWARD" "$@"
