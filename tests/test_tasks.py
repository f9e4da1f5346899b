"""The built-in worlds: seeded disjoint splits, the noisy demonstrator, the gold judge and the oracle editor."""
import os

import numpy as np
import pytest
from rapidfuzz.distance import Levenshtein

from fgalign.errors import InputError
from fgalign.tasks import load_task
from fgalign.tasks.lists import CATEGORIES, ListWorld, judge_items, parse_answer, parse_prompt
from fgalign.tasks.sentiment import SentimentWorld
from fgalign.tasks.splits import split_of

WORLDS = [ListWorld(), SentimentWorld()]


def changed_span(a: str, b: str) -> tuple[int, int]:
    """Lengths of the one window of `a` and of `b` that differ, once the common prefix and suffix are cut."""
    prefix = len(os.path.commonprefix([a, b]))
    suffix = len(os.path.commonprefix([a[prefix:][::-1], b[prefix:][::-1]]))
    return len(a) - prefix - suffix, len(b) - prefix - suffix
IDS = ["lists", "sentiment"]


# -- loading ------------------------------------------------------------------------------------------
def test_load_task_by_name_and_import_path():
    assert isinstance(load_task("default"), ListWorld)
    assert isinstance(load_task("fgalign.tasks.lists:ListWorld"), ListWorld)
    sentiment = load_task("sentiment", min_words=3)
    assert isinstance(sentiment, SentimentWorld) and sentiment.min_words == 3


@pytest.mark.parametrize("spec", ["nope", "no_such_module:Task", "fgalign.tasks.lists:NoSuchClass"])
def test_load_task_bad_spec_raises_input_error(spec):
    with pytest.raises(InputError):
        load_task(spec)


# -- splits and determinism ---------------------------------------------------------------------------
@pytest.mark.parametrize("world", WORLDS, ids=IDS)
def test_splits_are_disjoint_distinct_and_seeded(world):
    split = {s: world.prompts(s, 300, seed=0) for s in ("train", "valid", "test")}
    for name, prompts in split.items():
        assert len(prompts) == 300 and len(set(prompts)) == 300
        assert all(split_of(p) == name for p in prompts)
    assert not set(split["train"]) & set(split["valid"])
    assert not set(split["train"]) & set(split["test"])
    assert not set(split["valid"]) & set(split["test"])
    assert world.prompts("test", 300, seed=0) == split["test"]
    assert world.prompts("test", 300, seed=1) != split["test"]
    with pytest.raises(InputError):
        world.prompts("dev", 3, seed=0)


@pytest.mark.parametrize("world", WORLDS, ids=IDS)
def test_sft_examples_are_deterministic_and_from_train(world):
    a, b = world.sft_examples(200, seed=3), world.sft_examples(200, seed=3)
    assert a == b and a != world.sft_examples(200, seed=4)
    assert all(split_of(p) == "train" and r.startswith(" ") for p, r in a)


def test_a_large_request_from_a_small_split_still_succeeds():
    valid = ListWorld(n_min=2, n_max=2, max_excluded=0).prompts("valid", 20, seed=0)  # only ~1 such prompt
    assert len(valid) == 20 and all(split_of(p) == "valid" for p in valid)


# -- list world: the judge ----------------------------------------------------------------------------
def test_perfect_answer_scores_n_and_is_left_alone():
    world, prompt = ListWorld(), "List 3 fruits, not apple or pear:"
    response = " banana, cherry, plum."
    assert world.score(prompt, response) == 3
    assert not any(world.diagnose(prompt, response).values())
    assert world.minimal_edit(prompt, response) == response


@pytest.mark.parametrize("prompt, response, kind, expected_score", [
    ("List 3 fruits:", " apple, tiger, pear.", "wrong_category", 2 - 1),
    ("List 2 fruits, not apple:", " apple, pear.", "excluded", 1 - 1),
    ("List 3 fruits:", " apple, pear, apple.", "repeat", 2 - 1),
    ("List 3 fruits:", " apple, stupid pear, plum.", "rude", 3 - 1),
    ("List 3 fruits:", " apple, pear.", "wrong_count", 2 - 0.5),
    ("List 2 fruits:", " apple, pear, plum.", "wrong_count", 2 - 0.5),
    ("List 2 fruits:", " apple, pear", "format", 2 - 0.5),
    ("List 2 fruits:", " I like apples!", "unparsable", -2),
])
def test_each_mistake_is_diagnosed_scored_and_fixed(prompt, response, kind, expected_score):
    world = ListWorld()
    d = world.diagnose(prompt, response)
    assert d[kind] == 1 and sum(d.values()) == 1
    assert world.score(prompt, response) == expected_score
    edited = world.minimal_edit(prompt, response)
    assert world.score(prompt, edited) == parse_prompt(prompt).n
    if kind != "unparsable":  # only the wrong span moved: the edit is a few characters
        assert max(changed_span(response, edited)) <= len(", screwdriver"), edited


def test_fixes_keep_everything_else_verbatim():
    world = ListWorld()
    assert world.minimal_edit("List 3 fruits:", " apple, stupid pear, plum.") == " apple, pear, plum."
    assert world.minimal_edit("List 2 fruits:", " apple, pear") == " apple, pear."
    assert world.minimal_edit("List 3 fruits:", " apple, pear, plum, fig.") == " apple, pear, plum."
    # Too many items and one of them wrong: the wrong one is deleted, not replaced.
    assert world.minimal_edit("List 2 fruits:", " apple, tiger, pear.") == " apple, pear."
    edited = world.minimal_edit("List 3 fruits, not plum:", " apple, plum, pear.")
    first, new, last = parse_answer(edited).chunks
    assert edited.startswith(" apple, ") and edited.endswith(", pear.")
    assert new[1] in CATEGORIES["fruits"] and new[1] not in ("plum", "apple", "pear")
    assert world.minimal_edit("List 3 fruits, not plum:", " apple, plum, pear.") == edited  # deterministic


def test_unparsable_gets_a_full_correct_answer():
    world = ListWorld()
    edited = world.minimal_edit("List 4 tools:", "hammer hammer")
    assert world.score("List 4 tools:", edited) == 4 and edited.startswith(" ") and edited.endswith(".")


def test_a_prompt_from_another_world_is_an_input_error():
    with pytest.raises(InputError):
        ListWorld().score("Name some fruits", " apple.")


def test_oracle_edits_noisy_demonstrations_to_the_max_and_only_locally():
    world = ListWorld()
    for prompt, response in world.sft_examples(1000, seed=11):
        n, answer = parse_prompt(prompt).n, parse_answer(response)
        edited = world.minimal_edit(prompt, response)
        assert world.score(prompt, edited) == n >= world.score(prompt, response)
        assert world.minimal_edit(prompt, edited) == edited  # a fixed answer needs no more fixing
        if not any(world.diagnose(prompt, response).values()):
            assert edited == response
        # Every correct item is kept verbatim, in order (unless it was an extra one past N).
        items = [x for _, x in answer.chunks]
        correct = [x for x, v in zip(items, judge_items(parse_prompt(prompt), items)) if v == "ok"][:n]
        remaining = iter(x for _, x in parse_answer(edited).chunks)
        assert all(x in remaining for x in correct), (response, edited)


def test_demonstrator_noise_is_in_the_intended_band():
    world = ListWorld()
    examples = world.sft_examples(2000, seed=0)
    diagnoses = [world.diagnose(p, r) for p, r in examples]
    with_mistake = np.array([any(d.values()) for d in diagnoses])
    assert 0.40 <= with_mistake.mean() <= 0.60
    for kind in ("wrong_category", "excluded", "repeat", "rude", "wrong_count"):
        assert sum(d[kind] for d in diagnoses) > 50, kind
    assert not any(d["unparsable"] for d in diagnoses)
    scores = np.array([world.score(p, r) for p, r in examples])
    maxima = np.array([parse_prompt(p).n for p, _ in examples])
    assert np.array_equal(scores == maxima, ~with_mistake)  # the max score means "nothing to fix"
    assert scores.min() < 0


# -- sentiment world ----------------------------------------------------------------------------------
@pytest.mark.parametrize("response, expected", [
    (" was bad, but the music was lovely.", " was good, but the music was lovely."),
    (" was not good at all.", " was good at all."),
    (" wasn't good for me.", " was good for me."),
    (" was Terrible and the plot was not bad.", " was Excellent and the plot was not bad."),
    (" was hated by everyone in the room.", " was by everyone in the room."),  # no antonym: deleted
    (" was quiet and the plot was long.", " was quiet and the plot was long."),
])
def test_sentiment_edits_single_words(response, expected):
    world, prompt = SentimentWorld(), 'Review of "The Silent River": The acting'
    edited = world.minimal_edit(prompt, response)
    assert edited == expected
    assert world.score(prompt, edited) >= world.score(prompt, response)
    assert not world.diagnose(prompt, edited)["negative"] and not world.diagnose(prompt, edited)["negation"]


def test_sentiment_diagnose_and_score():
    world, prompt = SentimentWorld(), 'Review of "The Silent River": The plot'
    d = world.diagnose(prompt, " was bad and dull, and the music was not good.")
    assert d == {"negative": 2, "negation": 1, "short": 0}
    assert world.score(prompt, " was wonderful and the music was lovely.") > 0.5
    assert world.score(prompt, " was awful and the music was terrible.") < -0.5
    assert world.score(prompt, "") == -1.0
    assert world.score(prompt, " great.") == pytest.approx(world._vader.polarity_scores(" great.")["compound"] - 0.5)


def test_sentiment_oracle_never_makes_a_demonstration_worse():
    world = SentimentWorld()
    examples = world.sft_examples(1000, seed=5)
    flagged = 0
    for prompt, response in examples:
        edited = world.minimal_edit(prompt, response)
        d = world.diagnose(prompt, response)
        flagged += bool(d["negative"] or d["negation"])
        assert world.score(prompt, edited) >= world.score(prompt, response) - 1e-9
        if not (d["negative"] or d["negation"]):
            assert edited == response
        assert Levenshtein.normalized_distance(response, edited) < 0.4
    assert 0.4 < flagged / len(examples) < 0.7  # mixed sentiment, as intended
    words = [len(r.split()) for _, r in examples]
    assert 8 <= min(words) and max(words) <= 20


# -- tokenizers ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("world", WORLDS, ids=IDS)
def test_tokenizer_loads_and_round_trips(world, tmp_path):
    from fgalign.models.policy import load_tokenizer

    tok = load_tokenizer(world.tokenizer(tmp_path / "tok"))
    assert len(tok) <= world.vocab_size + 3 and tok.pad_token_id != tok.eos_token_id
    for prompt, response in world.sft_examples(50, seed=9) + [(world.prompts("test", 1, 0)[0], " Zebra?!")]:
        for text in (prompt, response):
            ids = tok(text, add_special_tokens=False)["input_ids"]
            assert tok.decode(ids) == text
        assert len(tok(response)["input_ids"]) < len(response)  # BPE merges: fewer tokens than bytes


# -- a user's own task, exactly as docs/tasks.md shows it -----------------------------------------------
def test_the_documented_custom_task_loads_by_import_path(tmp_path, monkeypatch):
    import re
    from pathlib import Path

    doc = (Path(__file__).parents[1] / "docs" / "tasks.md").read_text()
    code = re.search(r"```python\n# mypkg/mytask.py\n(.*?)```", doc, re.S).group(1)
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "mytask.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))

    task = load_task("mypkg.mytask:Shout")
    assert task.name == "shout"
    assert not set(task.prompts("train", 20, 0)) & set(task.prompts("test", 20, 0))
    prompt, response = next((p, r) for p, r in task.sft_examples(50, 0) if any(w.islower() for w in r.split()))
    edited = task.minimal_edit(prompt, response)
    assert task.score(prompt, edited) > task.score(prompt, response) and edited.upper() == response.upper()
