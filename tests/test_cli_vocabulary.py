"""One CLI vocabulary: the renamed options (CHANGELOG.md) keep working under their old names for one release —
on the command line, in pipeline YAML, in stored pipeline configs and as library keywords — each named as
deprecated, and give exactly what the new names give."""
import dataclasses
import importlib
import json

import pytest
import tyro

from fgalign.cli import COMMANDS, main, renamed_flags, with_new_flags
from fgalign.configfile import from_dict
from fgalign.pairs.stage import SampleConfig
from fgalign.pipeline.plan import check_stored_configs
from fgalign.rl.trainer import PPOConfig

# (command, old spelling, new spelling): the list in CHANGELOG.md
RENAMES = [
    ("sft", ["--n-examples", "7"], ["--num-examples", "7"]),
    ("sample", ["--n", "7"], ["--num-prompts", "7"]),
    ("sample", ["--sampling.max-new-tokens", "7"], ["--max-new-tokens", "7"]),
    ("edit", ["--in", "x.jsonl"], ["--data", "x.jsonl"]),
    ("label", ["--in", "x.jsonl"], ["--data", "x.jsonl"]),
    ("label", ["--mode", "chars", "--data", "x"], ["--label-mode", "chars", "--data", "x"]),
    ("ppo", ["--n-prompts", "7"], ["--num-prompts", "7"]),
    ("ppo", ["--epochs", "7"], ["--ppo-epochs", "7"]),
    ("ppo", ["--checkpoint-every", "7"], ["--save-steps", "7"]),
    ("eval", ["--n", "7"], ["--num-prompts", "7"]),
    ("eval", ["--sampling.top-k=7"], ["--top-k=7"]),
    ("best-of-n", ["--prompts", "7"], ["--num-prompts", "7"]),
    ("best-of-n", ["--sampling.temperature", "0.5"], ["--temperature", "0.5"]),
    ("pipeline", ["--force"], ["--overwrite"]),
]
REQUIRED = {"sft": ["--out", "o"], "sample": ["--policy", "p", "--out", "o"], "edit": ["--out", "o"],
            "label": ["--tokenizer", "t", "--out", "o"], "ppo": ["--policy", "p", "--rm", "r", "--out", "o"],
            "eval": ["--policy", "p", "--reference", "r"], "best-of-n": ["--policy", "p", "--rms", "r"],
            "pipeline": ["--config", "c", "--out", "o"]}


def config_class(command):
    module, name, _, _ = COMMANDS[command]
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("command,old,new", RENAMES)
def test_an_old_flag_gives_what_the_new_one_gives_and_says_so(command, old, new, capsys):
    cls = config_class(command)
    parsed_old = tyro.cli(cls, args=with_new_flags(command, cls, [*REQUIRED.get(command, []), *old]))
    err = capsys.readouterr().err
    assert f"fgalign {command}: deprecated: {old[0].split('=')[0]} is now {new[0].split('=')[0]}" in err
    parsed_new = tyro.cli(cls, args=[*REQUIRED.get(command, []), *new])
    assert parsed_old == parsed_new
    assert main(["--parse-only", command, *REQUIRED.get(command, []), *old]) == 0


def test_every_declared_rename_names_a_real_option():
    for command, (module, name, _, _) in COMMANDS.items():
        if not name:
            continue
        cls = config_class(command)
        fields = {f.name for f in dataclasses.fields(cls)}
        for old, new in getattr(cls, "RENAMED", {}).items():
            assert new in fields and old not in fields, (command, old, new)
        assert all(new.startswith("--") for new in renamed_flags(cls).values())


def test_old_yaml_keys_load_the_same_config(tmp_path, capsys):
    old = from_dict(SampleConfig, {"n": 60, "sampling": {"max_new_tokens": 20}}, "sample", "c.yaml",
                    policy="p", out="o")
    err = capsys.readouterr().err
    assert "sample.n is now sample.num_prompts" in err and "sampling.max_new_tokens is now" in err
    new = from_dict(SampleConfig, {"num_prompts": 60, "max_new_tokens": 20}, "sample", "c.yaml", policy="p", out="o")
    assert old == new and new.num_prompts == 60 and new.sampling.max_new_tokens == 20
    ppo_old = from_dict(PPOConfig, {"n_prompts": 64, "epochs": 1, "checkpoint_every": 0}, "ppo", "c.yaml",
                        policy="p", rm="r", out="o")
    assert (ppo_old.num_prompts, ppo_old.ppo_epochs, ppo_old.save_steps) == (64, 1, 0)
    from fgalign.errors import InputError

    with pytest.raises(InputError, match="give 'num_prompts' only"):
        from_dict(PPOConfig, {"n_prompts": 64, "num_prompts": 32}, "ppo", "c.yaml", policy="p", rm="r", out="o")


def test_an_old_pipeline_config_loads_and_names_each_old_key_once(tmp_path, capsys, monkeypatch):
    """configs/pretrained_rm.yaml keeps its old keys: it still loads, each old key named once (not once per
    method and seed), and a bad value is refused under its new name with nothing written."""
    from fgalign.configfile import read_yaml
    from fgalign.pipeline.config import build_configs
    from fgalign.pipeline.plan import make_plan

    monkeypatch.setattr("fgalign.configfile._TOLD", set())
    old = tmp_path / "old.yaml"
    old.write_text("task: default\nsample: {n: 60, sampling: {max_new_tokens: 20}}\nppo: {n_prompts: 64, epochs: 1}\n")
    cfgs = build_configs(read_yaml(old), tmp_path / "run", str(old))
    plan = make_plan(cfgs, tmp_path / "run", str(old), cfgs["methods"], [0, 1], [], False)
    err = capsys.readouterr().err
    assert err.count("ppo_epochs") == 1 and err.count("num_prompts") == 2  # ppo's and sample's
    runs = [r for runs in plan.ppo.values() for r in runs]
    assert len(runs) == 10 and {(r.config.num_prompts, r.config.ppo_epochs) for r in runs} == {(64, 1)}
    old.write_text("task: default\nsample: {n: 0}\n")
    assert main(["pipeline", "--config", str(old), "--out", str(tmp_path / "run")]) == 2
    assert "field 'sample.num_prompts': expected a number of prompts >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_library_callers_keep_the_old_keywords_with_a_warning():
    with pytest.warns(DeprecationWarning, match="n_prompts"):
        old = PPOConfig(policy="p", rm="r", out="o", n_prompts=5, epochs=2, checkpoint_every=0)
    assert old == PPOConfig(policy="p", rm="r", out="o", num_prompts=5, ppo_epochs=2, save_steps=0)
    assert dataclasses.replace(old, seed=3).num_prompts == 5


def test_a_stored_config_with_old_names_is_still_compared(tmp_path):
    """A run directory made before the renames: its stored `n_prompts` is compared as `num_prompts`, so a
    changed value is still refused (keys on one side only are not compared, and would slip through)."""
    ppo = PPOConfig(policy="p", rm="r", out=str(tmp_path / "ppo"), num_prompts=64)
    (tmp_path / "ppo").mkdir()
    stored = {"ppo x seed 0": {"ppo": {**dataclasses.asdict(ppo), "n_prompts": 32}, "eval": {}}}
    del stored["ppo x seed 0"]["ppo"]["num_prompts"]
    (tmp_path / "pipeline_stages.json").write_text(json.dumps(stored))
    from fgalign.errors import InputError

    with pytest.raises(InputError, match=r"num_prompts: 32 -> 64"):
        check_stored_configs(tmp_path, {"ppo x seed 0": (tmp_path / "ppo", {"ppo": ppo, "eval": {}})}, False)
