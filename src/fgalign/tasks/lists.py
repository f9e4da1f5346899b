"""The default world: "name N items of a category", with a gold judge and an oracle minimal editor.

Prompt    `List 3 fruits, not apple or pear:` (N in 2..5, 0–2 excluded items of the category)
Response  ` banana, cherry, plum.` (a leading space, items joined by ", ", a final period)

Every mistake is local — an item of another category (a false fact), an excluded item, a repeated item,
a rude word before an item — and the score adds a global term (how far the count is from N), so a
sequence-level signal is not trivially the same as the sum of token-level ones. See docs/tasks.md.
"""
from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from fgalign.errors import InputError
from fgalign.tasks.splits import sample_prompts, stable_hash
from fgalign.tasks.tokenizer import train_bpe_tokenizer

CATEGORIES: dict[str, tuple[str, ...]] = {
    "fruits": ("apple", "banana", "cherry", "grape", "lemon", "mango", "melon", "pear", "plum", "kiwi",
               "peach", "apricot", "fig", "papaya", "guava", "lychee", "coconut", "pineapple", "raspberry",
               "strawberry"),
    "animals": ("cat", "dog", "horse", "cow", "sheep", "goat", "pig", "rabbit", "mouse", "lion", "tiger",
                "bear", "wolf", "fox", "deer", "zebra", "camel", "monkey", "elephant", "giraffe"),
    "colors": ("red", "blue", "green", "yellow", "purple", "pink", "brown", "black", "white", "gray",
               "orange", "violet", "indigo", "crimson", "beige", "teal", "maroon", "navy", "ivory", "turquoise"),
    "tools": ("hammer", "wrench", "saw", "drill", "chisel", "screwdriver", "pliers", "shovel", "rake", "axe",
              "ladder", "clamp", "mallet", "trowel", "crowbar", "sander", "stapler", "scissors", "spanner",
              "hatchet"),
    "vegetables": ("carrot", "potato", "onion", "garlic", "cabbage", "lettuce", "spinach", "broccoli", "celery",
                   "cucumber", "pea", "bean", "radish", "turnip", "leek", "kale", "beet", "zucchini",
                   "eggplant", "asparagus"),
    "instruments": ("piano", "guitar", "violin", "cello", "flute", "drum", "trumpet", "harp", "saxophone",
                    "clarinet", "oboe", "banjo", "ukulele", "trombone", "tuba", "viola", "accordion",
                    "harmonica", "bassoon", "mandolin"),
    "countries": ("france", "spain", "italy", "germany", "japan", "china", "india", "brazil", "canada", "mexico",
                  "egypt", "kenya", "peru", "chile", "norway", "sweden", "greece", "turkey", "poland", "ireland"),
    "sports": ("soccer", "tennis", "golf", "hockey", "rugby", "cricket", "baseball", "basketball", "volleyball",
               "boxing", "rowing", "cycling", "swimming", "skiing", "surfing", "fencing", "archery", "karate",
               "badminton", "wrestling"),
}
RUDE_WORDS = ("stupid", "dumb", "lousy", "crappy")
MISTAKES = ("wrong_category", "excluded", "repeat", "rude", "wrong_count", "format", "unparsable")

_PROMPT_RE = re.compile(r"List (\d+) ([a-z]+)(?:, not ([a-z]+)(?: or ([a-z]+))?)?:")
_CHUNK_RE = re.compile(rf"(?:({'|'.join(RUDE_WORDS)}) )?([a-z]+)")


@dataclass(frozen=True)
class ListPrompt:
    category: str
    n: int
    excluded: tuple[str, ...]

    def text(self) -> str:
        not_part = f", not {' or '.join(self.excluded)}" if self.excluded else ""
        return f"List {self.n} {self.category}{not_part}:"

    def allowed(self) -> list[str]:
        return [x for x in CATEGORIES[self.category] if x not in self.excluded]


@dataclass
class ListAnswer:
    """A parsed response: `lead` + ", ".join(chunks) + ("." if period) + `trail` is the text, verbatim."""

    lead: str
    chunks: list[tuple[str | None, str]]  # (rude word or None, item)
    period: bool
    trail: str

    def text(self) -> str:
        body = ", ".join(f"{rude} {item}" if rude else item for rude, item in self.chunks)
        return self.lead + body + ("." if self.period else "") + self.trail


def parse_prompt(prompt: str) -> ListPrompt:
    m = _PROMPT_RE.fullmatch(prompt.strip())
    if m is None or m.group(2) not in CATEGORIES:
        raise InputError(f"not a list-world prompt: {prompt!r} (expected e.g. 'List 3 fruits, not apple:')",
                         field="prompt")
    return ListPrompt(m.group(2), int(m.group(1)), tuple(x for x in m.group(3, 4) if x))


def parse_answer(response: str) -> ListAnswer | None:
    """The response's items, or None when it does not have the list form at all (unparsable)."""
    body = response.strip()
    lead, trail = response[: len(response) - len(response.lstrip())], response[len(response.rstrip()):]
    period = body.endswith(".")
    body = body[:-1] if period else body
    chunks = []
    for part in body.split(", "):
        m = _CHUNK_RE.fullmatch(part)
        if m is None:
            return None
        chunks.append((m.group(1), m.group(2)))
    return ListAnswer(lead, chunks, period, trail)


def judge_items(prompt: ListPrompt, items: list[str]) -> list[str]:
    """One verdict per item, in order: "ok", "repeat", "excluded" or "wrong_category"."""
    category, seen, verdicts = set(CATEGORIES[prompt.category]), set(), []
    for item in items:
        if item in seen:
            verdicts.append("repeat")
        elif item in prompt.excluded:
            verdicts.append("excluded")
        elif item not in category:
            verdicts.append("wrong_category")
        else:
            verdicts.append("ok")
        seen.add(item)
    return verdicts


@dataclass
class ListWorld:
    """ "Name N items of a category": a tiny model learns it in a minute; the oracle judges and edits exactly."""

    name: str = "default"
    """Name recorded in outputs."""
    n_min: int = 2
    """Fewest items a prompt asks for."""
    n_max: int = 5
    """Most items a prompt asks for."""
    max_excluded: int = 2
    """Most items a prompt excludes ("not apple or pear")."""
    p_wrong: float = 0.06
    """Demonstrator: chance that an item comes from another category."""
    p_excluded: float = 0.06
    """Demonstrator: chance that an item is one the prompt excluded (when it excludes any)."""
    p_repeat: float = 0.04
    """Demonstrator: chance that an item repeats an earlier one."""
    p_rude: float = 0.05
    """Demonstrator: chance of a rude word before an item."""
    p_count: float = 0.10
    """Demonstrator: chance that the answer has one item too many or too few."""
    unparsable_score: float | None = None
    """Score of a response without the list form; None means -N (as bad as N wrong items)."""
    vocab_size: int = 512
    """Vocabulary of the BPE tokenizer built by `tokenizer()`."""

    # -- prompts and demonstrations --------------------------------------------------------------------
    def _draw_prompt(self, rng: random.Random) -> str:
        category = rng.choice(sorted(CATEGORIES))
        k = rng.randint(0, self.max_excluded)
        # Excluded items in category order, so that each set of exclusions is one prompt.
        excluded = tuple(sorted(rng.sample(CATEGORIES[category], k), key=CATEGORIES[category].index))
        return ListPrompt(category, rng.randint(self.n_min, self.n_max), excluded).text()

    def prompts(self, split: str, n: int, seed: int) -> list[str]:
        return sample_prompts(self._draw_prompt, split, n, seed)

    def demonstrate(self, prompt: str, rng: random.Random) -> str:
        """The noisy demonstrator: a correct answer with independent, local mistakes."""
        p = parse_prompt(prompt)
        n = max(1, p.n + (rng.choice((-1, 1)) if rng.random() < self.p_count else 0))
        good = rng.sample(p.allowed(), n)
        others = [x for c, items in CATEGORIES.items() if c != p.category for x in items]
        items: list[str] = []
        chunks = []
        for i in range(n):
            u, item = rng.random(), good[i]
            if u < self.p_wrong:
                item = rng.choice(others)
            elif u < self.p_wrong + self.p_excluded:
                item = rng.choice(p.excluded) if p.excluded else item
            elif u < self.p_wrong + self.p_excluded + self.p_repeat:
                item = rng.choice(items) if items else item
            items.append(item)
            chunks.append((rng.choice(RUDE_WORDS) if rng.random() < self.p_rude else None, item))
        return ListAnswer(" ", chunks, True, "").text()

    def sft_examples(self, n: int, seed: int) -> list[tuple[str, str]]:
        rng = random.Random(f"sft:{seed}")
        prompts = sample_prompts(self._draw_prompt, "train", n, seed, distinct=False)
        return [(prompt, self.demonstrate(prompt, rng)) for prompt in prompts]

    # -- the gold judge ---------------------------------------------------------------------------------
    def diagnose(self, prompt: str, response: str) -> dict[str, int]:
        """Counts of each kind of mistake (all zero for a perfect answer)."""
        p, answer = parse_prompt(prompt), parse_answer(response)
        counts = dict.fromkeys(MISTAKES, 0)
        if answer is None:
            counts["unparsable"] = 1
            return counts
        counts.update(Counter(v for v in judge_items(p, [item for _, item in answer.chunks]) if v != "ok"))
        counts["rude"] = sum(rude is not None for rude, _ in answer.chunks)
        counts["wrong_count"] = abs(len(answer.chunks) - p.n)
        counts["format"] = int(not answer.period)
        return counts

    def score(self, prompt: str, response: str) -> float:
        """+1 per correct distinct item (up to N), -1 per bad item or rude word, -0.5 per item off N,
        -0.5 without the final period. A perfect answer scores N."""
        p, answer = parse_prompt(prompt), parse_answer(response)
        if answer is None:
            return float(-p.n if self.unparsable_score is None else self.unparsable_score)
        d = self.diagnose(prompt, response)
        bad = d["wrong_category"] + d["excluded"] + d["repeat"]
        correct = len(answer.chunks) - bad
        return min(correct, p.n) - bad - d["rude"] - 0.5 * d["wrong_count"] - 0.5 * d["format"]

    # -- the oracle annotator ---------------------------------------------------------------------------
    def minimal_edit(self, prompt: str, response: str) -> str:
        """Fix only what is wrong, keeping every correct item verbatim and in place."""
        p, answer = parse_prompt(prompt), parse_answer(response)
        rng = random.Random(stable_hash(prompt + "\x00" + response))  # the same text always gets the same fix
        if answer is None:  # nothing to keep: a full answer (the minimality check will call it a rewrite)
            return ListAnswer(" ", [(None, x) for x in rng.sample(p.allowed(), p.n)], True, "").text()
        items = [item for _, item in answer.chunks]
        verdicts = judge_items(p, items)
        fresh = [x for x in p.allowed() if x not in items]
        rng.shuffle(fresh)
        excess = len(items) - p.n
        chunks = []
        for item, verdict in zip(items, verdicts):
            if verdict != "ok" and excess > 0:  # too many items: delete a bad one rather than replace it
                excess -= 1
                continue
            chunks.append((None, item if verdict == "ok" else fresh.pop()))  # rude words go either way
        chunks = chunks[: p.n]  # still too many: drop trailing (correct) items
        chunks += [(None, fresh.pop()) for _ in range(p.n - len(chunks))]  # too few: append before the period
        return ListAnswer(answer.lead, chunks, True, answer.trail).text()

    # -- a tokenizer for the tiny models ----------------------------------------------------------------
    def tokenizer(self, out_dir: str | Path) -> Path:
        """A byte-level BPE trained on demonstrations (fixed seed) and every item, saved in `out_dir`."""
        texts = [prompt + response for prompt, response in self.sft_examples(4000, seed=0)]
        texts += [" " + ", ".join(items) + "." for items in CATEGORIES.values()]
        return train_bpe_tokenizer(texts, out_dir, vocab_size=self.vocab_size)


@dataclass
class LongListWorld(ListWorld):
    """The list world with long answers and few mistakes: "List 14 animals, not cat:" → 10–16 items, ~60
    tokens (up to ~85), 1.35 local mistakes per demonstration (69% have 1–3, 26% none; measured on 2,000). The paper's setting, where a sequence score says
    *that* something is wrong and only token rewards say *where* (issue 10, section 5)."""

    name: str = "long-lists"
    n_min: int = 10
    n_max: int = 16  # a category has 20 items, 2 may be excluded, and the demonstrator may add one
    p_wrong: float = 0.03
    p_excluded: float = 0.03
    p_repeat: float = 0.02
    p_rude: float = 0.025
    p_count: float = 0.10
    vocab_size: int = 384  # smaller pieces: answers of ~60 tokens (up to ~85), measured on 500 demonstrations
