"""The advantage-estimator registry (rl/advantages.py): hand-computed values, dense credit kept, and the
trainer's groups of samples per prompt."""
import pytest
import torch
from ppo_fakes import FakeTask, TableRewardModel, eos_prone_policy_dir

from fgalign.errors import InputError
from fgalign.rl.advantages import ADVANTAGE_ESTIMATORS, estimate_advantages, returns_to_go
from fgalign.rl.ppo import gae
from fgalign.rl.trainer import PPOConfig, check_groups, train_ppo

MASK = torch.tensor([[True, True, True], [True, True, False], [True, True, True], [True, False, False]])
REWARDS = torch.tensor([[1.0, 0.0, 2.0], [0.5, -1.0, 9.0], [0.0, 0.0, 1.0], [3.0, 7.0, 7.0]])  # 9, 7, 7: masked out


def test_registry_holds_the_three_estimators():
    assert set(ADVANTAGE_ESTIMATORS) == {"gae", "reinforce++", "rloo"}
    with pytest.raises(ValueError, match="unknown advantage estimator 'ppo'"):
        estimate_advantages("ppo", REWARDS, torch.zeros(4, 3), MASK, gamma=1.0, lam=1.0)


def test_returns_to_go_by_hand():
    G = returns_to_go(REWARDS, MASK, gamma=0.5)
    expected = torch.tensor([[1.0 + 0.5 * (0.0 + 0.5 * 2.0), 0.0 + 0.5 * 2.0, 2.0],
                             [0.5 - 0.5, -1.0, 0.0],
                             [0.25, 0.5, 1.0],
                             [3.0, 0.0, 0.0]])
    assert torch.allclose(G, expected)


def test_gae_entry_is_the_ppo_gae():
    values = torch.randn(4, 3)
    for got, want in zip(estimate_advantages("gae", REWARDS, values, MASK, gamma=0.9, lam=0.7),
                         gae(REWARDS, values, MASK, 0.9, 0.7)):
        assert torch.equal(got, want)


def test_reinforce_pp_subtracts_the_batch_mean_return():
    adv, ret = estimate_advantages("reinforce++", REWARDS, torch.zeros(4, 3), MASK, gamma=1.0, lam=0.95)
    G = torch.tensor([[3.0, 2.0, 2.0], [-0.5, -1.0, 0.0], [1.0, 1.0, 1.0], [3.0, 0.0, 0.0]])
    mean = G[MASK].mean()  # (3+2+2 − 0.5−1 + 1+1+1 + 3) / 9
    assert torch.allclose(ret, G) and torch.allclose(adv, torch.where(MASK, G - mean, 0.0))
    assert adv[MASK].mean().abs() < 1e-6 and (adv[~MASK] == 0).all()


def test_rloo_baseline_is_the_other_samples_of_the_same_prompt():
    groups = torch.tensor([0, 0, 1, 1])
    adv, _ = estimate_advantages("rloo", REWARDS, torch.zeros(4, 3), MASK, gamma=1.0, lam=0.95, group_ids=groups)
    G = returns_to_go(REWARDS, MASK, 1.0)
    # Groups of two: each sample's baseline is the other sample, position by position.
    assert torch.allclose(adv[0], G[0] - G[1]) and torch.allclose(adv[1], torch.where(MASK[1], G[1] - G[0], 0.0))
    assert torch.allclose(adv[2], G[2] - G[3]) and torch.allclose(adv[3], torch.tensor([3.0 - 1.0, 0.0, 0.0]))
    # A group of three, mixed order in the batch: mean over the two others.
    adv3, _ = estimate_advantages("rloo", REWARDS[:3], torch.zeros(3, 3), MASK[:3], gamma=1.0, lam=0.95,
                                  group_ids=torch.tensor([5, 5, 5]))
    assert torch.allclose(adv3[2], torch.where(MASK[2], G[2] - (G[0] + G[1]) / 2, 0.0))


def test_rloo_gives_identical_samples_zero_advantage_and_refuses_singletons():
    same = REWARDS[[0, 0]]
    adv, _ = estimate_advantages("rloo", same, torch.zeros(2, 3), MASK[[0, 0]], gamma=1.0, lam=1.0,
                                 group_ids=torch.tensor([3, 3]))
    assert (adv == 0).all()
    with pytest.raises(ValueError, match="at least 2 samples"):
        estimate_advantages("rloo", REWARDS, torch.zeros(4, 3), MASK, gamma=1.0, lam=1.0,
                            group_ids=torch.tensor([0, 0, 1, 2]))
    with pytest.raises(ValueError, match="needs group_ids"):
        estimate_advantages("rloo", REWARDS, torch.zeros(4, 3), MASK, gamma=1.0, lam=1.0)


@pytest.mark.parametrize("name", ["reinforce++", "rloo"])
def test_a_token_reward_credits_that_token_and_the_ones_before_it_only(name):
    """Dense credit survives: raising r at position 1 of sample 0 moves A_0 and A_1 of sample 0, never A_2."""
    groups = torch.tensor([0, 0, 1, 1])
    base, _ = estimate_advantages(name, REWARDS, torch.zeros(4, 3), MASK, gamma=1.0, lam=1.0, group_ids=groups)
    bumped_rewards = REWARDS.clone()
    bumped_rewards[0, 1] += 1.0
    bumped, _ = estimate_advantages(name, bumped_rewards, torch.zeros(4, 3), MASK, gamma=1.0, lam=1.0,
                                    group_ids=groups)
    delta = bumped - base
    if name == "rloo":  # only the own sample moves up, its group partner's baseline moves the other way
        assert torch.allclose(delta[0], torch.tensor([1.0, 1.0, 0.0]))
        assert torch.allclose(delta[1], torch.tensor([-1.0, -1.0, 0.0])) and (delta[2:] == 0).all()
    else:  # the batch baseline moves every token by the same small amount; the credited ones by 1 more
        shift = delta[1, 0]
        assert torch.allclose(delta[0] - torch.where(MASK[0], shift, 0.0), torch.tensor([1.0, 1.0, 0.0]))


@pytest.mark.parametrize("options, match", [
    (dict(advantage="rloo", group_size=1), "give --group-size 2 or more"),
    (dict(advantage="gae", group_size=3), "not a multiple of --group-size 3"),
    (dict(advantage="gae", group_size=0), "expected a number of samples per prompt >= 1"),
])
def test_bad_group_options_are_refused(options, match):
    cfg = PPOConfig(policy="p", rm="r", out="o", batch_size=8, **options)
    with pytest.raises(InputError, match=match):
        check_groups(cfg)


def test_rloo_trains_with_groups_of_samples_per_prompt(tiny_policy_dir, tmp_path):
    """Two iterations of rloo with 4 samples of each of 2 prompts: the rollout holds each prompt 4 times, side
    by side, and the run logs finite losses."""
    policy_dir = eos_prone_policy_dir(tiny_policy_dir, tmp_path / "policy")
    seen = []

    class RecordingTask(FakeTask):
        def score(self, prompt, response):
            seen.append(prompt)
            return super().score(prompt, response)

    cfg = PPOConfig(policy=str(policy_dir), rm="unused", out=str(tmp_path / "run"), batch_size=8, max_new_tokens=8,
                    minibatches=2, ppo_epochs=1, num_prompts=32, micro_batch=8, iterations=2, advantage="rloo",
                    group_size=4, reward="token")
    result = train_ppo(cfg, reward_model=TableRewardModel(300), task=RecordingTask())
    first = seen[:8]
    assert first[:4] == [first[0]] * 4 and first[4:] == [first[4]] * 4
    assert all(torch.isfinite(torch.tensor(h["policy_loss"])) for h in result["history"])
