"""Pairwise judges for win rates: the task's oracle, or an LLM behind an OpenAI-compatible endpoint.

`compare(prompt, a, b)` returns 1.0 when `a` is better, 0.0 when `b` is, 0.5 for a tie, so a win rate is
the mean of the scores (ties count one half, as in the paper).
"""
from __future__ import annotations

import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from fgalign.errors import InputError
from fgalign.llm.client import make_client
from fgalign.tasks import load_task


class Judge(Protocol):
    name: str

    def compare(self, prompt: str, a: str, b: str) -> float:
        """1.0: `a` is better; 0.0: `b` is better; 0.5: tie."""

    def compare_many(self, prompts: list[str], a_list: list[str], b_list: list[str]) -> list[float]:
        """`compare` over aligned lists."""


def _check_lengths(prompts: list[str], a_list: list[str], b_list: list[str]) -> None:
    if not len(prompts) == len(a_list) == len(b_list):
        raise ValueError(f"compare_many needs aligned lists, got {len(prompts)}/{len(a_list)}/{len(b_list)}")


class TaskJudge:
    """The task's gold score decides; equal scores are a tie."""

    def __init__(self, task: Any):
        self.task = task
        self.name = f"task:{task.name}"

    def compare(self, prompt: str, a: str, b: str) -> float:
        sa, sb = self.task.score(prompt, a), self.task.score(prompt, b)
        return 1.0 if sa > sb else 0.0 if sa < sb else 0.5

    def compare_many(self, prompts: list[str], a_list: list[str], b_list: list[str]) -> list[float]:
        _check_lengths(prompts, a_list, b_list)
        return [self.compare(p, a, b) for p, a, b in zip(prompts, a_list, b_list)]


# ---------------------------------------------------------------- LLM judge
SYSTEM = ("You are an impartial judge. Compare two responses to the same prompt and decide which one is better: "
          "more correct, more helpful, more polite. Do not let the order of the responses or their length "
          "sway you. Answer with exactly one of: A, B, tie.")

USER = """[Prompt]
{prompt}

[Response A]
{a}

[Response B]
{b}

Which response is better? Answer with exactly one of: A, B, tie."""

_TIE_WORDS = r"tie|tied|draw|equal|equally|neither|both|same"
_JSON = re.compile(r"\{.*?\}", re.DOTALL)
_BRACKETS = re.compile(r"\[\[\s*(a|b|c|tie)\s*\]\]", re.IGNORECASE)
_BARE = re.compile(r"^\W*(?:response|answer|assistant|output)?\s*\(?([ab]|tie)\)?\W*$", re.IGNORECASE)
_CLAIM = re.compile(  # "the better response is B", "Verdict: A", "winner - Response (a)"
    r"(?:better|best|winner|verdict|answer|choice|prefer(?:red)?)\s*(?:response|answer|one)?\s*(?:is|:|-|=)\s*"
    r"(?:response\s*|answer\s*|assistant\s*|output\s*)?\(?([ab]|tie)\)?\b", re.IGNORECASE)
_SUBJECT = re.compile(  # "Response A is better", "A is clearly better"
    r"(?:response\s*|answer\s*|assistant\s*|output\s*)?\(?\b([ab])\b\)?\s+is\s+(?:\w+\s+)?"
    r"(?:better|superior|preferred)", re.IGNORECASE)
_NAMED = re.compile(r"\b(?:response|answer|assistant|output)\s*\(?([ab])\)?\b", re.IGNORECASE)


def _norm(letter: str) -> str:
    letter = letter.strip().lower()
    # MT-bench writes a tie as [[C]]
    return "tie" if letter == "c" or re.fullmatch(_TIE_WORDS, letter) else letter.upper()


def parse_verdict(text: str) -> str | None:
    """"A", "B" or "tie" from a judge's reply in any common form, or None when it cannot be told."""
    text = text.strip()
    for blob in _JSON.findall(text):  # {"winner": "A"}, {"verdict": "Response B"}, {"better": "tie"}
        try:
            obj = json.loads(blob)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            for field in ("winner", "verdict", "better", "preferred", "choice", "answer", "result"):
                if isinstance(obj.get(field), str) and (v := parse_verdict(obj[field])) is not None:
                    return v
    if found := _BRACKETS.findall(text):  # MT-bench style [[A]] / [[B]] / [[C]] (C: tie); the last one counts
        return _norm(found[-1])
    if m := _BARE.match(text):
        return _norm(m.group(1))
    if found := _CLAIM.findall(text):
        return _norm(found[-1])
    if found := _SUBJECT.findall(text):
        return _norm(found[-1])
    named = {x.upper() for x in _NAMED.findall(text)}
    if len(named) == 1:
        return named.pop()
    if not named and re.search(rf"\b(?:{_TIE_WORDS})\b", text, re.IGNORECASE):
        return "tie"
    return None


class OpenAIJudge:
    """Pairwise LLM judge, asked in both orders: position bias cancels, and disagreement is a tie."""

    def __init__(self, base_url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY", timeout: float = 60.0,
                 max_retries: int = 4, backoff_base: float = 1.0, cache_dir: str | Path | None = None,
                 concurrency: int = 8, temperature: float = 0.0, max_tokens: int | None = None):
        self.client = make_client(base_url, model, temperature=temperature, max_tokens=max_tokens,
                                  api_key_env=api_key_env, timeout=timeout, max_retries=max_retries,
                                  backoff_base=backoff_base, cache_dir=cache_dir)
        self.concurrency = concurrency
        self.name = f"openai:{model}"
        self.unparsed = 0  # replies no verdict could be read from (scored as ties)
        self._lock = threading.Lock()

    def verdict(self, prompt: str, first: str, second: str) -> str:
        """The judge's pick in one order: "A" (first), "B" (second) or "tie" (also for an unreadable reply)."""
        messages = [{"role": "system", "content": SYSTEM},
                    {"role": "user", "content": USER.format(prompt=prompt, a=first, b=second)}]
        v = parse_verdict(self.client.complete(messages))
        if v is None:
            with self._lock:  # counted, not retried: a greedy judge would say the same again
                self.unparsed += 1
            return "tie"
        return v

    def compare(self, prompt: str, a: str, b: str) -> float:
        forward = {"A": 1.0, "B": 0.0, "tie": 0.5}[self.verdict(prompt, a, b)]
        backward = {"A": 0.0, "B": 1.0, "tie": 0.5}[self.verdict(prompt, b, a)]  # b shown first
        return forward if forward == backward else 0.5

    def compare_many(self, prompts: list[str], a_list: list[str], b_list: list[str]) -> list[float]:
        """Scores in order; a request that fails after all retries raises RequestFailed (replies so far stay
        in the cache, so a rerun only asks the rest)."""
        _check_lengths(prompts, a_list, b_list)
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self.compare, prompts, a_list, b_list))


def load_judge(spec: str, *, task: Any = None, **openai_kwargs: Any) -> Judge:
    """"task" (the task's oracle; pass `task`) or "openai" (pass base_url, model, ... as keywords)."""
    if spec == "task":
        if task is None:
            raise InputError("the task judge needs a task", field="--task")
        if isinstance(task, str):
            task = load_task(task)
        return TaskJudge(task)
    if spec == "openai":
        return OpenAIJudge(**openai_kwargs)
    raise InputError(f"unknown judge '{spec}': expected 'task' or 'openai'", field="--judge")
