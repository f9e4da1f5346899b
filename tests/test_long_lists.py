"""The long-answer list world: long demonstrations with a few local mistakes, fixed by the same oracle."""
import statistics

from fgalign.tasks import load_task


def test_long_lists_demonstrations_are_long_with_few_mistakes():
    task = load_task("long-lists")
    examples = task.sft_examples(400, seed=0)
    n_items = [len(r.split(",")) for _, r in examples]
    assert 9 <= min(n_items) and max(n_items) <= 17 and statistics.mean(n_items) > 12
    mistakes = [sum(task.diagnose(p, r).values()) for p, r in examples]
    assert 1.0 < statistics.mean(mistakes) < 1.8
    assert 0.5 < sum(1 <= m <= 3 for m in mistakes) / len(mistakes)


def test_long_lists_oracle_edit_is_perfect_and_minimal():
    task = load_task("long-lists")
    for prompt, response in task.sft_examples(50, seed=1):
        edited = task.minimal_edit(prompt, response)
        n = int(prompt.split()[1])
        assert task.score(prompt, edited) == n
        if task.score(prompt, response) == n:
            assert edited == response
