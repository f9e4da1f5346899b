"""The RM loss with its better/worse halves run side by side gives the gradients of the one-pass loss."""
import copy
import random

import pytest
import torch

from fgalign.models.reward import build_reward_model, pad_batch
from fgalign.train.pair_step import pair_loss, side_by_side_pair_loss


@pytest.fixture()
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _batch(level):
    rng = random.Random(0)
    B = 4
    prompts = [[rng.randrange(3, 200) for _ in range(rng.randrange(2, 6))] for _ in range(B)] * 2
    responses = [[rng.randrange(3, 200) for _ in range(rng.randrange(1, 9))] for _ in range(2 * B)]
    labels = [[rng.choice([-1, 0, 0, 1]) for _ in r] for r in responses]
    batch = pad_batch(prompts, responses, 0, labels if level == "token" else None)
    batch["token_labels"] = batch.pop("labels")
    return batch


@pytest.mark.parametrize("level,loss", [("sequence", "bt"), ("token", "mistake-bce"), ("token", "mean-bt")])
def test_side_by_side_gradients_equal_one_pass(tiny_policy_dir, two_threads, level, loss):
    model = build_reward_model(tiny_policy_dir, level, loss).model.train()
    batch = _batch(level)
    one, two = copy.deepcopy(model), copy.deepcopy(model)
    value, _ = pair_loss(one, batch, level, loss, 0.5)
    value.backward()
    side = side_by_side_pair_loss(two, batch, level, loss, 0.5)
    assert side.item() == pytest.approx(value.item(), rel=1e-5)
    for (name, p), q in zip(one.named_parameters(), two.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)
    again = copy.deepcopy(model)  # two gradient terms per parameter: the order of the threads does not matter
    side_by_side_pair_loss(again, batch, level, loss, 0.5)
    assert all(torch.equal(p.grad, q.grad) for p, q in zip(two.parameters(), again.parameters()))
