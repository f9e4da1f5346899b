"""Reward-model math and scoring API: losses on hand-computed tensors, prefix scores, projection, save/load."""
import math

import pytest
import torch

from fgalign.models import projection
from fgalign.models.reward import build_reward_model, head_module, load_reward_model, pad_batch, scores_from_head
from fgalign.models.reward_losses import (edit_bt, gather_last, mean_bt, prefix_means, sequence_rm_loss,
                                          token_bce, token_rm_loss, zero_anchor)


# ---- pure math -------------------------------------------------------------------------------------------
def test_prefix_means_are_running_means_and_end_at_the_sequence_score():
    r = torch.tensor([[9.0, 1.0, 3.0, 2.0, 7.0]])
    mask = torch.tensor([[0, 1, 1, 1, 0]])  # prompt token, 3 response tokens, padding
    s = prefix_means(r, mask)
    assert torch.allclose(s, torch.tensor([[0.0, 1.0, 2.0, 2.0, 0.0]]))
    assert s[0, 3] == pytest.approx((1 + 3 + 2) / 3)


def test_mean_bt_is_bt_on_mean_response_rewards():
    r_b, m_b = torch.tensor([[5.0, 1.0, 3.0]]), torch.tensor([[0, 1, 1]])  # mean 2
    r_w, m_w = torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([[1, 1, 1]])  # mean 1/3
    expected = -math.log(1 / (1 + math.exp(-(2 - 1 / 3))))
    assert mean_bt(r_b, m_b, r_w, m_w).item() == pytest.approx(expected, rel=1e-6)


def test_edit_bt_ignores_kept_tokens():
    labels_b, labels_w = torch.tensor([[0, 1, 0]]), torch.tensor([[-1, 0, 0]])
    r_b, r_w = torch.tensor([[100.0, 2.0, -50.0]]), torch.tensor([[1.0, 40.0, 7.0]])
    # Only the +1 token (2.0) and the -1 token (1.0) count: BT(2 - 1).
    assert edit_bt(r_b, labels_b, r_w, labels_w).item() == pytest.approx(math.log1p(math.exp(-1.0)), rel=1e-6)
    r_b2 = r_b.clone()
    r_b2[0, 0] = -100.0  # moving a kept token changes nothing
    assert edit_bt(r_b2, labels_b, r_w, labels_w).item() == pytest.approx(edit_bt(r_b, labels_b, r_w, labels_w).item())


def test_token_bce_is_logistic_on_signed_labels_and_skips_zero_labels():
    r, labels = torch.tensor([[2.0, -1.0, 30.0]]), torch.tensor([[1, -1, 0]])
    expected = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-1.0))) / 2
    assert token_bce(r, labels).item() == pytest.approx(expected, rel=1e-6)


def test_mistake_bce_pushes_deleted_tokens_down_and_anchors_kept_and_inserted_ones():
    r_b, lab_b, m_b = torch.tensor([[0.5, 2.0, 1.0]]), torch.tensor([[0, 1, 0]]), torch.tensor([[0, 1, 1]])
    r_w, lab_w, m_w = torch.tensor([[-1.0, 3.0]]), torch.tensor([[-1, 0]]), torch.tensor([[1, 1]])
    # Logistic part: the -1 token only, softplus(-1). Anchor over every correct response token, inserted
    # included: 2.0 (+1), 1.0 and 3.0 (kept) -> (4 + 1 + 9) / 3.
    loss = token_rm_loss("mistake-bce", 0.5, r_b, lab_b, m_b, r_w, lab_w, m_w)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-1.0)) + 0.5 * 14 / 3, rel=1e-6)
    # token-bce instead pushes the inserted token up and anchors the kept tokens only.
    loss = token_rm_loss("token-bce", 0.5, r_b, lab_b, m_b, r_w, lab_w, m_w)
    full_bce = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-1.0))) / 2
    assert loss.item() == pytest.approx(full_bce + 0.5 * 10 / 2, rel=1e-6)


def test_zero_anchor_is_mean_square_over_kept_response_tokens_of_both_sides():
    r_b, lab_b, m_b = torch.tensor([[4.0, 1.0, 2.0]]), torch.tensor([[0, 0, 1]]), torch.tensor([[0, 1, 1]])
    r_w, lab_w, m_w = torch.tensor([[3.0, 5.0]]), torch.tensor([[0, -1]]), torch.tensor([[1, 1]])
    # Kept response tokens: 1.0 (better; 4.0 is prompt) and 3.0 (worse): (1 + 9) / 2.
    assert zero_anchor(r_b, lab_b, m_b, r_w, lab_w, m_w).item() == pytest.approx(5.0)


def test_token_rm_loss_adds_anchor_and_rejects_unknown_kinds():
    g = torch.Generator().manual_seed(0)
    r_b, r_w = torch.randn(3, 6, generator=g), torch.randn(3, 6, generator=g)
    lab = torch.tensor([[0, 0, 1, 0, -1, 0]] * 3)
    mask = torch.tensor([[0, 1, 1, 1, 1, 1]] * 3)
    base = token_rm_loss("mean-bt", 0.0, r_b, lab, mask, r_w, lab, mask)
    anchored = token_rm_loss("mean-bt", 0.5, r_b, lab, mask, r_w, lab, mask)
    assert anchored.item() == pytest.approx(base.item() + 0.5 * zero_anchor(r_b, lab, mask, r_w, lab, mask).mean().item(),
                                            rel=1e-5)
    with pytest.raises(ValueError, match="unknown token loss"):
        token_rm_loss("nope", 0.0, r_b, lab, mask, r_w, lab, mask)


def test_losses_are_means_of_per_pair_losses_so_batches_split_exactly():
    """What makes 2-process training equal to 1-process: loss(batch) = mean of loss(half batches)."""
    g = torch.Generator().manual_seed(1)
    r_b, r_w = torch.randn(4, 7, generator=g), torch.randn(4, 7, generator=g)
    lab = torch.randint(-1, 2, (4, 7), generator=g)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [0, 1, 1, 1, 0, 0, 0], [0, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0, 0]])
    lab = lab * mask
    for kind in ("mean-bt", "edit-bt", "token-bce", "mistake-bce"):
        full = token_rm_loss(kind, 0.1, r_b, lab, mask, r_w, lab, mask)
        halves = [token_rm_loss(kind, 0.1, r_b[s], lab[s], mask[s], r_w[s], lab[s], mask[s])
                  for s in (slice(0, 2), slice(2, 4))]
        assert full.item() == pytest.approx(sum(h.item() for h in halves) / 2, rel=1e-6), kind


def test_sequence_loss_reads_the_last_index():
    r_b, r_w = torch.tensor([[0.0, 3.0, -9.0]]), torch.tensor([[0.0, 1.0, 9.0]])
    last_b, last_w = torch.tensor([1]), torch.tensor([1])
    assert gather_last(r_b, last_b).item() == 3.0
    assert sequence_rm_loss(r_b, last_b, r_w, last_w).item() == pytest.approx(math.log1p(math.exp(-2.0)), rel=1e-6)


def test_pad_batch_masks_are_explicit_even_when_a_token_equals_pad():
    batch = pad_batch([[5, 6], [7]], [[1, 0], [2, 3, 4]], pad_id=0, labels=[[1, -1], [0, 0, 1]])
    assert batch["input_ids"].tolist() == [[5, 6, 1, 0], [7, 2, 3, 4]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 1]]  # the 0 inside is a real token
    assert batch["response_mask"].tolist() == [[0, 0, 1, 1], [0, 1, 1, 1]]
    assert batch["labels"].tolist() == [[0, 0, 1, -1], [0, 0, 0, 1]]
    assert batch["last_index"].tolist() == [3, 3]


def test_sequence_level_scores_from_head():
    h = torch.tensor([[1.0, 2.0, 3.0, 0.0], [4.0, 5.0, 6.0, 7.0]])
    mask, last = torch.tensor([[0, 1, 1, 0], [0, 0, 1, 1]]), torch.tensor([2, 3])
    tok, pre, seq = scores_from_head(h, mask, last, "sequence", causal=True)
    assert seq.tolist() == [3.0, 7.0]
    assert tok.tolist() == [[0, 0, 3, 0], [0, 0, 0, 7]]
    assert pre.tolist() == [[0, 2, 3, 0], [0, 0, 6, 7]]
    _, pre_enc, _ = scores_from_head(h, mask, last, "sequence", causal=False)
    assert pre_enc.tolist() == tok.tolist()  # an encoder knows only the final score


# ---- projection between tokenizations ----------------------------------------------------------------------
def test_projection_preserves_totals_and_assigns_by_last_character():
    caller_ends = [3, 6, 10, 10]  # "abc|def|ghij|<eos>"
    rm_ends = [2, 5, 10, 10]      # "ab|cde|fghij|<eos>"
    owners = projection.owner_index(rm_ends, [False, False, False, True], caller_ends)
    assert owners == [0, 1, 2, 3]
    values = torch.tensor([1.0, 2.0, 4.0, 8.0])
    projected = projection.project_sum(values, owners, 4)
    assert projected.tolist() == [1.0, 2.0, 4.0, 8.0]
    owners2 = projection.owner_index([1, 2, 3, 10], [False] * 4, caller_ends)  # three RM tokens inside "abc"
    projected2 = projection.project_sum(values, owners2, 4)
    assert projected2.tolist() == [7.0, 0.0, 8.0, 0.0] and projected2.sum() == values.sum()
    prefix = projection.project_prefix(torch.tensor([0.1, 0.2, 0.3, 0.4]), owners2, 4)
    assert prefix.tolist() == pytest.approx([0.3, 0.3, 0.4, 0.4])


def test_char_ends_follow_decoded_text(tiny_tokenizer):
    ids = tiny_tokenizer("apple, banana", add_special_tokens=False)["input_ids"] + [tiny_tokenizer.eos_token_id]
    ends = projection.char_ends(tiny_tokenizer, ids)
    assert ends[-1] == ends[-2] == len("apple, banana")  # EOS is zero-width at the end
    assert ends == sorted(ends)


# ---- the model ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def random_token_rm(tiny_policy_dir):
    torch.manual_seed(0)
    rm = build_reward_model(tiny_policy_dir, "token", "mean-bt", anchor=0.1)
    assert torch.count_nonzero(head_module(rm.model).weight) == 0  # zero-initialised head
    torch.nn.init.normal_(head_module(rm.model).weight)  # give it something to say
    return rm


def test_fresh_head_scores_zero(tiny_policy_dir):
    rm = build_reward_model(tiny_policy_dir, "token", "mean-bt")
    out = rm.score_texts(["List 2 colors:"], [" red, blue."])
    assert torch.count_nonzero(out.token_rewards) == 0


def test_rm_swaps_gelu_new_for_the_fused_kernel_of_the_same_function(tiny_policy_dir):
    from transformers import AutoConfig, AutoModel

    assert AutoConfig.from_pretrained(tiny_policy_dir).activation_function == "gelu_new"
    rm = build_reward_model(tiny_policy_dir, "token", "mean-bt")
    assert rm.model.config.activation_function == "gelu_pytorch_tanh"
    original = AutoModel.from_pretrained(tiny_policy_dir).eval()  # gelu_new, same weights
    ids = torch.randint(3, 50, (2, 12))
    with torch.no_grad():
        a = original(input_ids=ids).last_hidden_state
        b = rm.model.transformer(input_ids=ids).last_hidden_state
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_token_scores_are_causal_padding_invariant_and_consistent(random_token_rm, tiny_tokenizer):
    rm = random_token_rm
    assert rm.info.backbone_kind == "causal"
    prompts, responses = ["List 3 fruits:", "List 2 colors:"], [" apple, banana, cherry.", " red."]
    both = rm.score_texts(prompts, responses)
    alone = rm.score_texts(prompts[1:], responses[1:])
    n = len(rm.encode_response(responses[1]))
    assert torch.allclose(both.token_rewards[1, :n], alone.token_rewards[0, :n], atol=1e-5)  # padding-invariant
    assert torch.count_nonzero(both.token_rewards[1, n:]) == 0
    # Causal: a response that shares a prefix shares the prefix's rewards.
    longer = rm.score_texts(prompts[:1], [" apple, banana, cherry. cat"])
    k = len(rm.tokenizer(" apple, banana,", add_special_tokens=False)["input_ids"])
    assert torch.allclose(longer.token_rewards[0, :k], both.token_rewards[0, :k], atol=1e-5)
    # The sequence score is the mean reward and the last prefix score.
    m = len(rm.encode_response(responses[0]))
    assert both.sequence_score[0].item() == pytest.approx(both.token_rewards[0, :m].mean().item(), rel=1e-5)
    assert both.prefix_scores[0, m - 1].item() == pytest.approx(both.sequence_score[0].item(), rel=1e-5)
    # Same tokenizer object or an equal copy: scored as given.
    ids = [rm.encode_prompt(p) for p in prompts], [rm.encode_response(r) for r in responses]
    via_ids = rm.score_responses(*ids, tokenizer=tiny_tokenizer)
    assert torch.allclose(via_ids.token_rewards, both.token_rewards)
    micro = rm.score_texts(prompts, responses, micro_batch=1)
    assert torch.allclose(micro.token_rewards, both.token_rewards, atol=1e-5)


def test_save_and_load_round_trip(random_token_rm, tmp_path):
    from transformers import AutoModelForTokenClassification

    random_token_rm.save(tmp_path / "rm")
    loaded = load_reward_model(tmp_path / "rm")
    assert loaded.level == "token" and loaded.info.anchor == 0.1 and loaded.info.loss == "mean-bt"
    a = random_token_rm.score_texts(["List 2 colors:"], [" red, blue."])
    b = loaded.score_texts(["List 2 colors:"], [" red, blue."])
    assert torch.allclose(a.token_rewards, b.token_rewards, atol=1e-6)
    assert (tmp_path / "rm" / "model.safetensors").exists()
    AutoModelForTokenClassification.from_pretrained(tmp_path / "rm")  # plain transformers loads it


def test_load_refuses_a_directory_without_rm_metadata(tiny_policy_dir):
    from fgalign.errors import InputError

    with pytest.raises(InputError, match="fgalign_rm.json"):
        load_reward_model(tiny_policy_dir)
