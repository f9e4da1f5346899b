"""configs/accelerate/: each set-up parses into accelerate's FSDP/DeepSpeed settings, and `fgalign train-rm` and
`fgalign sft` launched with the FSDP config run as 2 real CPU processes (accelerate turns FSDP on only with an
accelerator, so on CPU this is data parallel over gloo) with one writer and a loadable output."""
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from fgalign.data.io import write_jsonl
from fgalign.train.sharding import full_state_dict, is_main_process

from _rm_data import make_edit_records

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "accelerate"


def launch_env(config: str) -> dict[str, str]:
    """The environment accelerate's launcher gives each process for a config file (nothing is started)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(CONFIGS / config), "--num_processes", "2", "x.py"])
    args, _, _ = _validate_launch_command(args)
    return prepare_multi_gpu_env(args)


def test_fsdp_config_is_fsdp2_full_shard_saving_full_weights():
    env = launch_env("fsdp.yaml")
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_VERSION"] == "2"
    assert env["FSDP_RESHARD_AFTER_FORWARD"] == "true" and env["FSDP_AUTO_WRAP_POLICY"] == "TRANSFORMER_BASED_WRAP"
    assert env["FSDP_STATE_DICT_TYPE"] == "FULL_STATE_DICT"  # the output loads with plain transformers
    assert env["FSDP_CPU_RAM_EFFICIENT_LOADING"] == "false"  # every rank loads: the RM head is re-initialised


@pytest.mark.parametrize("name, stage", [("deepspeed_zero2.yaml", 2), ("deepspeed_zero3.yaml", 3)])
def test_deepspeed_configs_point_at_json_the_trainer_completes(name, stage):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(CONFIGS / name))
    assert str(cfg.distributed_type) == "DistributedType.DEEPSPEED" or cfg.distributed_type == "DEEPSPEED"
    assert cfg.deepspeed_config["zero3_init_flag"] is False
    ds = json.loads((REPO / cfg.deepspeed_config["deepspeed_config_file"]).read_text())
    assert ds["zero_optimization"]["stage"] == stage
    # "auto" only where the HF Trainer fills the value in from its own arguments
    fills = {"train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
             "gradient_clipping", "enabled", "reduce_bucket_size", "stage3_prefetch_bucket_size",
             "stage3_param_persistence_threshold"}

    def autos(node, key=None):
        if isinstance(node, dict):
            for k, v in node.items():
                yield from autos(v, k)
        elif node == "auto":
            yield key
    assert set(autos(ds)) <= fills
    if stage == 3:
        assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True


def test_full_state_dict_gathers_only_when_sharded():
    gathered = {"w": torch.ones(2)}
    accel = SimpleNamespace(get_state_dict=lambda model: gathered if model == "wrapped" else None)
    plain = SimpleNamespace(is_fsdp_enabled=False, is_deepspeed_enabled=False, accelerator=accel, model_wrapped="x")
    assert full_state_dict(plain) is None
    for flag in ("is_fsdp_enabled", "is_deepspeed_enabled"):
        sharded = SimpleNamespace(**{**vars(plain), flag: True, "model_wrapped": "wrapped"})
        assert full_state_dict(sharded) is gathered
    assert is_main_process() == (int(os.environ.get("RANK", "0")) == 0)


def two_cpu_processes(tmp_path, *argv):
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / "fsdp.yaml"),
           "--num_processes", "2", "--mixed_precision", "no", "-m", "fgalign.cli", *argv]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=420, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_train_rm_and_sft_launched_with_the_fsdp_config_on_two_cpu_processes(tiny_policy_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoModelForTokenClassification

    data = tmp_path / "edits.jsonl"
    write_jsonl(data, make_edit_records(16, seed=0))
    proc = two_cpu_processes(tmp_path, "train-rm", "--data", str(data), "--model", str(tiny_policy_dir),
                             "--out", str(tmp_path / "rm"), "--batch-size", "4", "--max-steps", "3",
                             "--device", "cpu", "--logging-steps", "100")
    assert proc.stdout.count("train-rm: 16 pairs") == 2 and proc.stdout.count("-> ") == 1  # 2 ranks, 1 writer
    rm = AutoModelForTokenClassification.from_pretrained(tmp_path / "rm")
    fresh = load_file(str(tiny_policy_dir / "model.safetensors"))
    trained = load_file(str(tmp_path / "rm" / "model.safetensors"))
    name = "transformer.h.0.mlp.c_fc.weight"
    assert trained[name].shape == fresh[name].shape and not torch.equal(trained[name], fresh[name])
    assert rm.config.num_labels == 1

    proc = two_cpu_processes(tmp_path, "sft", "--task", "default", "--out", str(tmp_path / "sft"), "--n-examples",
                             "64", "--epochs", "1", "--batch-size", "8", "--device", "cpu", "--tiny.n-layer", "1",
                             "--tiny.d-model", "32", "--tiny.n-head", "2")
    assert proc.stdout.count("sft: 64 examples") == 1  # rank 0 alone writes and reports
    AutoModelForCausalLM.from_pretrained(tmp_path / "sft")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".sft")) == []  # no scratch left
    assert json.loads((tmp_path / "sft" / "fgalign_config.json").read_text())["stage"] == "sft"
