"""`--rm task`: the task's oracle as a reward model (rl/oracle_reward.py), on the default world's tokens."""
import pytest
import torch

from fgalign.rl.oracle_reward import TaskRewardModel
from fgalign.tasks import load_task


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from fgalign.models.policy import TinyModelConfig, build_tiny_causal_lm, load_tokenizer

    task = load_task("default")
    out = tmp_path_factory.mktemp("world_policy")
    tokenizer = load_tokenizer(task.tokenizer(out))
    torch.manual_seed(0)
    model = build_tiny_causal_lm(TinyModelConfig(n_layer=1, d_model=32, n_head=2, max_len=64), tokenizer)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return task, tokenizer, out


def _marked(rm, tokenizer, prompt, response):
    ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    out = rm.score_responses([tokenizer(prompt, add_special_tokens=False)["input_ids"]], [ids], tokenizer)
    pieces = [(tokenizer.decode([i]), float(r)) for i, r in zip(ids, out.token_rewards[0])]
    return "".join(p for p, r in pieces if r < 0), out


@pytest.mark.parametrize("prompt, response, marked", [
    ("List 3 fruits, not apple:", " banana, apple, plum.", " apple"),   # an excluded item, replaced
    ("List 3 fruits:", " banana, cherry.", "."),                        # an omission: the token where it belongs
    ("List 2 fruits:", " banana, stupid cherry, fig.", " stupid, fig"),  # a rude word and one item too many
    ("List 2 fruits:", " banana, cherry.", ""),                         # nothing wrong: no penalty anywhere
])
def test_oracle_marks_what_its_minimal_edit_changes(world, prompt, response, marked):
    task, tokenizer, _ = world
    got, out = _marked(TaskRewardModel(task), tokenizer, prompt, response)
    assert got == marked
    assert float(out.sequence_score[0]) == task.score(prompt, response)
    assert torch.equal(out.prefix_scores[0], out.token_rewards[0].cumsum(0))


def test_ppo_trains_on_the_oracle(world, tmp_path):
    from fgalign.rl.trainer import PPOConfig, train_ppo

    task, _, policy_dir = world
    cfg = PPOConfig(policy=str(policy_dir), rm="task", out=str(tmp_path / "run"), batch_size=8, max_new_tokens=8,
                    minibatches=2, ppo_epochs=1, num_prompts=16, micro_batch=8, iterations=2, reward="token")
    history = train_ppo(cfg, task=task)["history"]
    # The oracle's sequence score is the task score of the same samples.
    assert [h["rm_score"] for h in history] == pytest.approx([h["task_score"] for h in history])
    assert history[0]["rm_score"] < 0  # a random policy: unparsable answers, scored -N by the oracle


def test_pipeline_methods_may_use_the_oracle(tmp_path):
    from fgalign.pipeline.plan import ppo_config, trained_rms

    methods = {"ppo-oracle": {"rm": "task", "reward": "token"}, "ppo-seq": {"rm": "rm-seq", "reward": "sequence"}}
    assert trained_rms(methods) == ["rm-seq"]
    cfg = ppo_config("ppo-oracle", methods["ppo-oracle"], 0, {"ppo": {}, "task": "default"}, tmp_path)
    assert cfg.rm == "task"
