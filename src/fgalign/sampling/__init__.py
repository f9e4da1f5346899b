"""Samplers: prompts in, a `Rollout` out (ids and explicit masks), used by pair sampling, evaluation and PPO."""
