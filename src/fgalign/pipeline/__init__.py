"""`fgalign pipeline`: SFT → sample → edit → three reward models → PPO per method and seed → eval → report.

Every method runs the same PPO with the same iterations, target KL and settings; only the reward differs.
Checkpoints are selected on validation prompts and reported on separate test prompts (DESIGN §6: every
method over-optimises). Stages whose outputs exist are skipped unless --overwrite.

config.py: the command's options and the YAML's sections; plan.py: every stage's resolved config, checked
before anything runs and stored for reruns; runner.py: executes the plan.
"""
from fgalign.pipeline.config import DEFAULT_METHODS, DEFAULT_RMS, PipelineConfig, build_configs
from fgalign.pipeline.runner import (aggregate, check_same_edits, make_evaluators, ppo_device, run, run_ppo_method,
                                     use_edits)

__all__ = ["DEFAULT_METHODS", "DEFAULT_RMS", "PipelineConfig", "aggregate", "build_configs", "check_same_edits",
           "make_evaluators", "ppo_device", "run", "run_ppo_method", "use_edits"]
