"""`--rollout vllm` (fgalign ppo and pipeline): on a machine without a CUDA GPU it stops at once, exit 2, with
the reason, before any model is loaded or any stage runs. The vLLM sampler itself needs a GPU (untested here)."""
from pathlib import Path

import pytest
import torch

from fgalign.cli import main
from fgalign.sampling import vllm as vllm_sampling


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the refusal does not apply")
def test_ppo_with_vllm_rollouts_refuses_without_a_gpu(tiny_policy_dir, tmp_path, capsys, monkeypatch):
    from fgalign.rl import trainer

    loaded = []
    monkeypatch.setattr(trainer, "load_causal_lm", lambda *a, **k: loaded.append(a) or pytest.fail("a model loaded"))
    rc = main(["ppo", "--policy", str(tiny_policy_dir), "--rm", str(tmp_path / "no-rm-needed"),
               "--out", str(tmp_path / "ppo"), "--rollout", "vllm"])
    err = capsys.readouterr().err
    assert rc == 2 and "--rollout" in err and "CUDA GPU" in err and "--rollout hf" in err
    assert not (tmp_path / "ppo").exists() and not loaded  # at once: no model was loaded


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the refusal does not apply")
def test_pipeline_with_vllm_rollouts_refuses_before_sft(tmp_path, capsys):
    micro = Path(__file__).resolve().parents[1] / "configs" / "micro.yaml"
    rc = main(["pipeline", "--config", str(micro), "--out", str(tmp_path / "run"), "--rollout", "vllm"])
    assert rc == 2 and "CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "run" / "sft").exists()


def test_vllm_problem_names_what_is_missing(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "CUDA GPU" in vllm_sampling.vllm_problem()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(vllm_sampling.importlib.util, "find_spec", lambda name: None)
    assert "pip install 'fgalign[vllm]'" in vllm_sampling.vllm_problem()
