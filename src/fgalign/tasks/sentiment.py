"""The sentiment world: continue a movie review positively, judged by VADER (a real lexicon scorer).

Prompt    `Review of "The Silent River": The acting`
Response  ` was lovely, but the music felt dull.` (one sentence, ~8–20 words, a leading space)

The judge is VADER's compound score of the response. The oracle editor changes single words only: a
negative word (negative valence in VADER's lexicon, not already negated) becomes its positive antonym or
is deleted, and a negation of a positive word ("not good") is dropped. See docs/tasks.md.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from vaderSentiment.vaderSentiment import NEGATE, SentimentIntensityAnalyzer

from fgalign.tasks.splits import sample_prompts
from fgalign.tasks.tokenizer import train_bpe_tokenizer

TITLE_WORDS = ("Silent", "Golden", "Hidden", "Distant", "Crimson", "Frozen", "Endless", "Quiet", "Wandering",
               "Last", "Midnight", "Burning", "Electric", "Paper", "Glass", "Iron", "Northern", "Velvet",
               "Hollow", "Secret")
TITLE_NOUNS = ("River", "Garden", "Mountain", "Harbor", "Letter", "Kingdom", "Station", "Orchard", "Forest",
               "Lantern", "Island", "Bridge", "Window", "Winter", "Summer", "Engine", "Horizon", "Castle",
               "Valley", "Signal")
ASPECTS = ("acting", "plot", "music", "ending", "dialogue", "pacing", "script", "cast", "soundtrack", "story",
           "direction", "camera work")

POSITIVE = ("good", "great", "lovely", "wonderful", "brilliant", "excellent", "superb", "beautiful", "charming",
            "clever", "funny", "strong", "fresh", "engaging", "enjoyable", "delightful", "elegant", "pleasant")
NEUTRAL = ("long", "short", "quiet", "loud", "simple", "plain", "slow", "familiar", "predictable", "busy",
           "unusual", "subtle", "restrained", "ordinary")
# Negative word -> positive counterpart used by the oracle editor (a negative word not listed is deleted).
ANTONYMS = {
    "bad": "good", "boring": "exciting", "dull": "lively", "weak": "strong", "awful": "wonderful",
    "terrible": "excellent", "messy": "neat", "poor": "fine", "confusing": "clear", "annoying": "charming",
    "ugly": "beautiful", "lazy": "careful", "lame": "clever", "horrible": "lovely", "disappointing": "satisfying",
    "painful": "pleasant", "tired": "fresh", "sad": "happy", "odd": "gentle", "strange": "fine",
}
NEGATIVE = tuple(ANTONYMS)
BOOSTERS = ("", "", "", "very ", "really ", "quite ", "rather ")
VERBS = ("was", "felt", "seemed")
TEMPLATES = (
    " {v1} {a}, and overall the {x} {v2} {b}.",
    " {v1} {a}, but I think the {x} {v2} {b}.",
    " {v1} {a}; the {x} {v2} {b} and the {y} {v3} {c}.",
    " {v1} {a}, while the {x} {v2} {b} most of the time.",
    " {v1} {a} at times, although I thought the {x} {v2} {b}.",
)
# Contractions lose their negation by dropping "n't"; these few need a spelled-out positive form.
_UNNEGATED = {"can't": "can", "cannot": "can", "won't": "will", "ain't": "is"}
_WORD_RE = re.compile(r"[A-Za-z']+")
NEGATIONS = frozenset(NEGATE)


def _delete_word(text: str, start: int, end: int) -> str:
    """Delete text[start:end] with one neighbouring space, so no double space is left behind."""
    if start > 0 and text[start - 1] == " ":
        start -= 1
    elif end < len(text) and text[end] == " ":
        end += 1
    return text[:start] + text[end:]


def _same_case(word: str, like: str) -> str:
    return word.capitalize() if like[:1].isupper() else word


@dataclass
class SentimentWorld:
    """Positive movie-review continuations, judged by VADER's compound score."""

    name: str = "sentiment"
    """Name recorded in outputs."""
    p_positive: float = 0.5
    """Demonstrator: chance that an adjective slot is positive."""
    p_negative: float = 0.3
    """Demonstrator: chance that an adjective slot is negative (the rest are neutral)."""
    p_negation: float = 0.1
    """Demonstrator: chance that an adjective is negated ("not good", "not bad")."""
    min_words: int = 5
    """A response with fewer words is degenerate and loses `short_penalty`."""
    short_penalty: float = 0.5
    """Subtracted from the score of a response shorter than `min_words` (an empty one scores -1)."""
    vocab_size: int = 512
    """Vocabulary of the BPE tokenizer built by `tokenizer()`."""

    @cached_property
    def _vader(self) -> SentimentIntensityAnalyzer:
        return SentimentIntensityAnalyzer()  # reads its lexicon file once, on first use

    def _valence(self, word: str) -> float:
        return self._vader.lexicon.get(word.lower(), 0.0)

    @staticmethod
    def _is_negation(word: str) -> bool:
        return word.lower() in NEGATIONS or word.lower().endswith("n't")

    # -- prompts and demonstrations --------------------------------------------------------------------
    def _draw_prompt(self, rng: random.Random) -> str:
        title = f"The {rng.choice(TITLE_WORDS)} {rng.choice(TITLE_NOUNS)}"
        return f'Review of "{title}": The {rng.choice(ASPECTS)}'

    def prompts(self, split: str, n: int, seed: int) -> list[str]:
        return sample_prompts(self._draw_prompt, split, n, seed)

    def _adjective(self, rng: random.Random) -> str:
        u = rng.random()
        pool = POSITIVE if u < self.p_positive else NEGATIVE if u < self.p_positive + self.p_negative else NEUTRAL
        word = rng.choice(pool)
        return f"not {word}" if rng.random() < self.p_negation else rng.choice(BOOSTERS) + word

    def demonstrate(self, prompt: str, rng: random.Random) -> str:
        """The noisy demonstrator: a templated sentence mixing positive, neutral and negative words."""
        aspect = prompt.rsplit(": The ", 1)[-1]
        x, y = rng.sample([a for a in ASPECTS if a != aspect], 2)
        v1, v2, v3 = (rng.choice(VERBS) for _ in range(3))
        a, b, c = (self._adjective(rng) for _ in range(3))
        return rng.choice(TEMPLATES).format(v1=v1, v2=v2, v3=v3, a=a, b=b, c=c, x=x, y=y)

    def sft_examples(self, n: int, seed: int) -> list[tuple[str, str]]:
        rng = random.Random(f"sft:{seed}")
        prompts = sample_prompts(self._draw_prompt, "train", n, seed, distinct=False)
        return [(prompt, self.demonstrate(prompt, rng)) for prompt in prompts]

    # -- the gold judge ---------------------------------------------------------------------------------
    def _negated(self, words: list[str], i: int) -> bool:
        """VADER's rule: a word is negated when one of the three words before it is a negation."""
        return any(self._is_negation(w) for w in words[max(0, i - 3): i])

    def diagnose(self, prompt: str, response: str) -> dict[str, int]:
        """negative: negative words not negated; negation: negations of a positive word; short: degenerate."""
        words = _WORD_RE.findall(response)
        negative = sum(self._valence(w) < 0 and not self._negated(words, i) for i, w in enumerate(words))
        negation = sum(self._is_negation(w) and any(self._valence(v) > 0 for v in words[i + 1: i + 4])
                       for i, w in enumerate(words))
        return {"negative": negative, "negation": negation, "short": int(len(words) < self.min_words)}

    def score(self, prompt: str, response: str) -> float:
        """VADER compound in [-1, 1]; minus `short_penalty` under `min_words` words; -1 when empty."""
        n_words = len(_WORD_RE.findall(response))
        if n_words == 0:
            return -1.0
        compound = self._vader.polarity_scores(response)["compound"]
        return compound - (self.short_penalty if n_words < self.min_words else 0.0)

    # -- the oracle annotator ---------------------------------------------------------------------------
    def minimal_edit(self, prompt: str, response: str) -> str:
        """Drop negations of positive words, then turn each negative word positive (or delete it)."""
        text = self._fix_each_word(response, self._negation_fix)
        return self._fix_each_word(text, self._negative_fix)

    def _fix_each_word(self, text: str, fix) -> str:
        """Apply `fix` to every word, right to left, so the offsets of the words not yet visited stay valid."""
        matches = list(_WORD_RE.finditer(text))
        words = [m.group() for m in matches]
        for i in reversed(range(len(matches))):
            text = fix(text, words, i, matches[i].start(), matches[i].end())
        return text

    def _negation_fix(self, text: str, words: list[str], i: int, start: int, end: int) -> str:
        word = words[i]
        if not (self._is_negation(word) and any(self._valence(v) > 0 for v in words[i + 1: i + 4])):
            return text
        low = word.lower()
        if low in _UNNEGATED or low.endswith("n't"):  # "wasn't good" -> "was good"
            plain = _UNNEGATED.get(low, word[:-3])
            return text[:start] + _same_case(plain, word) + text[end:]
        return _delete_word(text, start, end)  # "not good" -> "good"

    def _negative_fix(self, text: str, words: list[str], i: int, start: int, end: int) -> str:
        word = words[i]
        if self._valence(word) >= 0 or self._negated(words, i):  # "not bad" already reads positive
            return text
        positive = ANTONYMS.get(word.lower())
        if positive is None:
            return _delete_word(text, start, end)
        return text[:start] + _same_case(positive, word) + text[end:]

    # -- a tokenizer for the tiny models ----------------------------------------------------------------
    def tokenizer(self, out_dir: str | Path) -> Path:
        """A byte-level BPE trained on demonstrations (fixed seed) and the editor's words, saved in `out_dir`."""
        texts = [prompt + response for prompt, response in self.sft_examples(4000, seed=0)]
        texts += [" " + " ".join(POSITIVE + NEUTRAL + NEGATIVE + tuple(ANTONYMS.values())) + "."]
        return train_bpe_tokenizer(texts, out_dir, vocab_size=self.vocab_size)
