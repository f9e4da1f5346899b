"""Reading and validating preference records: every bad input names file, line, field; nothing half-written."""
import json

import pytest

from fgalign.data import PreferenceRecord, ReadStats, read_records, write_records
from fgalign.data.records import render_text
from fgalign.data.tokenize import chat_prompt, check_tokenizer, encode_prompt
from fgalign.errors import InputError

GOOD = {"prompt": "List 2 fruits:", "chosen": " apple, pear.", "rejected": " apple, dog."}


def write_lines(path, lines):
    path.write_bytes(b"".join((l if isinstance(l, bytes) else l.encode()) + b"\n" for l in lines))
    return path


@pytest.mark.parametrize("bad, field, expected", [
    ({**GOOD, "prompt": " "}, "prompt", "non-empty string"),
    ({"prompt": "p", "rejected": "r"}, "chosen", "missing required field"),
    ({**GOOD, "rejected": 3}, "rejected", "expected a string"),
    ({**GOOD, "edited": ["x"]}, "edited", "message 0"),
    ({**GOOD, "meta": [1]}, "meta", "expected an object"),
])
def test_bad_record_names_file_line_field(tmp_path, bad, field, expected):
    path = write_lines(tmp_path / "d.jsonl", [json.dumps(GOOD), json.dumps(bad)])
    with pytest.raises(InputError) as e:
        read_records(path)
    msg = str(e.value)
    assert str(path) in msg and "line 2" in msg and f"field '{field}'" in msg and expected in msg


def test_invalid_json_and_bad_utf8(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [json.dumps(GOOD), '{"prompt": "x",'])
    with pytest.raises(InputError, match=r"line 2: invalid JSON"):
        read_records(path)
    path = write_lines(tmp_path / "e.jsonl", [json.dumps(GOOD), b'{"prompt": "\xff\xfe"}'])
    with pytest.raises(InputError, match=r"line 2: is not valid UTF-8"):
        read_records(path)


def test_empty_response_is_a_valid_sample(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [json.dumps({**GOOD, "rejected": ""})])
    assert read_records(path)[0].rejected == ""


def test_noop_edits_skipped_and_counted(tmp_path):
    rows = [{**GOOD, "edited": " apple, pear."}, {**GOOD, "edited": GOOD["rejected"]}, GOOD]
    path = write_lines(tmp_path / "d.jsonl", [json.dumps(r) for r in rows])
    stats = ReadStats()
    recs = read_records(path, require_edited=True, stats=stats)
    assert len(recs) == 1 and recs[0].edited == " apple, pear."
    assert (stats.read, stats.skipped_noop_edits, stats.skipped_missing_edit) == (3, 1, 1)


def test_formats_roundtrip(tmp_path):
    import datasets

    recs = [PreferenceRecord(**GOOD, edited=" apple, kiwi.", meta={"score": 1.5}), PreferenceRecord(**GOOD)]
    write_records(tmp_path / "d.jsonl", recs)
    write_records(tmp_path / "d.parquet", recs)
    (tmp_path / "d.json").write_text(json.dumps([r.to_dict() for r in recs]))
    datasets.Dataset.from_list([{**GOOD, "edited": " apple, kiwi."}]).save_to_disk(str(tmp_path / "ds"))
    for name in ("d.jsonl", "d.parquet", "d.json"):
        back = read_records(tmp_path / name)
        assert [r.to_dict() for r in back] == [r.to_dict() for r in recs], name
    assert read_records(tmp_path / "ds")[0].edited == " apple, kiwi."


def test_json_array_row_is_named(tmp_path):
    (tmp_path / "d.json").write_text(json.dumps([GOOD, {**GOOD, "prompt": None}]))
    with pytest.raises(InputError, match=r"row 1, field .prompt."):
        read_records(tmp_path / "d.json")


def test_conversational_needs_chat_template(tmp_path, tiny_tokenizer):
    conv = {"prompt": [{"role": "user", "content": "List 2 fruits"}],
            "chosen": [{"role": "assistant", "content": "apple, pear."}],
            "rejected": [{"role": "assistant", "content": "apple, dog."}]}
    path = write_lines(tmp_path / "c.jsonl", [json.dumps(conv)])
    rec = read_records(path)[0]
    with pytest.raises(InputError, match="chat template"):
        render_text(rec, tiny_tokenizer)
    tok = type(tiny_tokenizer).from_pretrained(tiny_tokenizer.name_or_path)
    tok.chat_template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}" \
                        "{% if add_generation_prompt %}<assistant>{% endif %}"
    text = render_text(rec, tok)
    assert text.chosen == "apple, pear." and text.prompt == conv["prompt"]  # the prompt is templated once, when encoded
    assert chat_prompt(tok, text.prompt) == "<user>List 2 fruits<assistant>"
    # A plain prompt reaches a chat model through its template as one user message: the same ids as the chat record.
    assert encode_prompt(tok, "List 2 fruits") == encode_prompt(tok, text.prompt)
    assert chat_prompt(tiny_tokenizer, "List 2 fruits") == "List 2 fruits"  # no template: the text as is


def test_pad_is_a_spare_special_token_when_the_model_has_one(tiny_tokenizer):
    """A Llama-style tokenizer whose pad is EOS gets its <unk> as pad (no new id past the embeddings); one with
    no spare token gets a new pad token."""
    tok = type(tiny_tokenizer).from_pretrained(tiny_tokenizer.name_or_path)
    tok.add_special_tokens({"unk_token": "<|unk|>"})
    n = len(tok)
    tok.pad_token = tok.eos_token
    check_tokenizer(tok)
    assert tok.pad_token_id == tok.unk_token_id != tok.eos_token_id and len(tok) == n
    bare = type(tiny_tokenizer).from_pretrained(tiny_tokenizer.name_or_path)
    bare.pad_token = bare.eos_token
    check_tokenizer(bare)
    assert bare.pad_token == "<|pad|>" and bare.pad_token_id not in (bare.eos_token_id, None)


def test_atomic_write_keeps_existing_output(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("precious\n")

    def rows():
        yield GOOD
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        write_records(out, rows())
    assert out.read_text() == "precious\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]  # no temp file left behind
