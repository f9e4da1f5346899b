"""Rollouts: masks from generated ids, padding-invariant logits, pad == EOS, truncation, micro-batches."""
import copy

import pytest
import torch

from fgalign.models.policy import load_causal_lm, load_tokenizer
from fgalign.models.value import ValueModel
from ppo_fakes import make_eos_prone

from fgalign.rl.scoring import in_micro_batches, policy_logprobs, values_of
from fgalign.sampling.hf import generate
from fgalign.sampling.rollout import Rollout, SamplingConfig, left_pad, response_mask_from_ids

PROMPTS = ["List 3 fruits:", "I hated the boring plot, but", "red", "List 4 animals: cat, dog,"]


@pytest.fixture(scope="module")
def policy(tiny_policy_dir, tok):
    return make_eos_prone(load_causal_lm(tiny_policy_dir), tok.eos_token_id).eval()


@pytest.fixture(scope="module")
def tok(tiny_policy_dir):
    return load_tokenizer(tiny_policy_dir)


def _prompt_ids(tok):
    return [tok(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]


def test_response_mask_from_generated_ids():
    eos = 7
    ids = torch.tensor([[3, 4, eos, 1, 1],     # EOS then pad
                        [5, eos, eos, eos, eos],  # pad == EOS: only the first EOS counts
                        [3, 3, 3, 3, 3]])      # cut at the length limit
    mask, last, truncated = response_mask_from_ids(ids, eos)
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]
    assert last.tolist() == [2, 1, 4] and truncated.tolist() == [False, False, True]


def test_logits_do_not_change_with_left_padding(policy, tok):
    prompt, response = _prompt_ids(tok)[0], tok(" apple, banana", add_special_tokens=False)["input_ids"]
    response = torch.tensor([response + [tok.eos_token_id]])
    results = []
    for extra in (0, 5, 17):
        ids, mask = left_pad([prompt, [11] * (len(prompt) + extra)], tok.pad_token_id)
        r_mask, last, trunc = response_mask_from_ids(response.expand(2, -1), tok.eos_token_id)
        ro = Rollout(ids, mask, response.expand(2, -1), r_mask, last, trunc)
        with torch.no_grad():
            results.append(policy_logprobs(policy, ro.select(slice(0, 1)))[0])
        assert ro.position_ids[0, -response.shape[1]:].tolist() == list(range(len(prompt), len(prompt) + response.shape[1]))
    torch.testing.assert_close(results[0], results[1], atol=1e-5, rtol=0)
    torch.testing.assert_close(results[0], results[2], atol=1e-5, rtol=0)


def test_generate_masks_and_logprobs_match_sampling_distribution(policy, tok):
    settings = SamplingConfig(max_new_tokens=10)
    torch.manual_seed(0)
    ro = generate(policy, _prompt_ids(tok) * 4, tok.eos_token_id, tok.pad_token_id, settings, micro_batch=6)
    B, T = ro.response_ids.shape
    assert B == 16 and T <= 10 and ro.last_index.max() == T - 1
    for row, mask, last, trunc in zip(ro.response_ids, ro.response_mask, ro.last_index, ro.truncated):
        assert mask.tolist() == [t <= last for t in range(T)]  # a prefix, ending at last_index
        assert (row[last] == tok.eos_token_id) != bool(trunc)
        assert tok.eos_token_id not in row[:last].tolist()
        if trunc:
            assert last == settings.max_new_tokens - 1
    assert ro.truncated.any() and not ro.truncated.all(), "the random tiny policy should produce both cases"
    # The log-probs scored afterwards are those of the distribution that sampled (same positions, same logits).
    torch.manual_seed(0)
    ids, mask = left_pad(_prompt_ids(tok) * 4, tok.pad_token_id)
    out = policy.generate(input_ids=ids[:6], attention_mask=mask[:6].long(), do_sample=True, top_k=0, top_p=1.0,
                          temperature=1.0, max_new_tokens=10, eos_token_id=tok.eos_token_id,
                          pad_token_id=tok.pad_token_id, output_logits=True, return_dict_in_generate=True)
    gen_lp = torch.stack(out.logits, 1).log_softmax(-1).gather(-1, out.sequences[:, ids.shape[1]:, None])[..., 0]
    lp, ent = policy_logprobs(policy, ro.select(slice(0, 6)), with_entropy=True)
    n = min(gen_lp.shape[1], T)
    m = ro.response_mask[:6, :n]
    torch.testing.assert_close(lp[:6, :n][m], gen_lp[:, :n][m], atol=1e-4, rtol=0)
    assert (ent[m] > 0).all() and (ent[~ro.response_mask[:6]] == 0).all()


def test_tokenizer_with_pad_equal_to_eos_gives_the_same_rollout(policy, tok):
    same = copy.deepcopy(tok)
    same.pad_token = same.eos_token
    assert same.pad_token_id == same.eos_token_id
    settings = SamplingConfig(max_new_tokens=8)
    torch.manual_seed(1)
    a = generate(policy, _prompt_ids(tok), tok.eos_token_id, tok.pad_token_id, settings)
    torch.manual_seed(1)
    b = generate(policy, _prompt_ids(same), same.eos_token_id, same.pad_token_id, settings)
    assert a.response_lists() == b.response_lists()
    assert torch.equal(a.last_index, b.last_index) and torch.equal(a.truncated, b.truncated)
    with torch.no_grad():
        torch.testing.assert_close(policy_logprobs(policy, a)[0], policy_logprobs(policy, b)[0], atol=1e-5, rtol=0)


def test_micro_batches_and_values(policy, tok, tiny_policy_dir):
    torch.manual_seed(2)
    ro = generate(policy, _prompt_ids(tok) * 2, tok.eos_token_id, tok.pad_token_id, SamplingConfig(max_new_tokens=6))
    full = in_micro_batches(lambda r: policy_logprobs(policy, r)[0], ro, micro_batch=8)
    chunked = in_micro_batches(lambda r: policy_logprobs(policy, r)[0], ro, micro_batch=3)
    torch.testing.assert_close(full, chunked, atol=1e-5, rtol=0)
    assert (full[~ro.response_mask] == 0).all() and (full[ro.response_mask] < 0).all()
    value = ValueModel.from_backbone_dir(tiny_policy_dir, vocab_size=len(tok))
    torch.nn.init.normal_(value.head.weight)
    v = in_micro_batches(lambda r: values_of(value, r), ro, micro_batch=3)
    assert v.shape == ro.response_mask.shape and (v[~ro.response_mask] == 0).all() and v[ro.response_mask].abs().sum() > 0
    prompts, responses = ro.prompt_lists(), ro.response_lists()
    assert [len(r) for r in responses] == (ro.last_index + 1).tolist()
    assert prompts[0] == _prompt_ids(tok)[0]
