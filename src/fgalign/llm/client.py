"""One chat-completions client for every OpenAI-compatible server (vLLM, Ollama, hosted APIs).

It adds what a long annotation run needs to the official `openai` client: retries with exponential
backoff on timeouts, 429 and 5xx; an on-disk reply cache; and an API key that only ever comes from the
environment (never from a flag, and never printed: error texts are scrubbed of it).
"""
from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path
from typing import Any

from fgalign.errors import InputError
from fgalign.llm.cache import ResponseCache, request_key

RETRYABLE_STATUS = {408, 409, 429}  # plus every 5xx
FATAL_STATUS = {401: "the server refused the API key", 403: "the API key may not use this model",
                404: "not found: check --base-url (it usually ends in /v1) and --model"}


class RequestFailed(Exception):
    """One request failed for good (retries used up, or a refusal that retrying cannot fix)."""


class ChatClient:
    """Chat completions with retries and a cache; thread-safe (one client serves a thread pool)."""

    def __init__(self, base_url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY", timeout: float = 60.0,
                 max_retries: int = 4, backoff_base: float = 1.0, backoff_max: float = 30.0,
                 cache_dir: str | Path | None = None, params: dict[str, Any] | None = None):
        if not base_url or not model:
            raise InputError("an OpenAI-compatible editor/judge needs both --base-url and --model",
                             field="--base-url" if not base_url else "--model")
        self.base_url, self.model, self.api_key_env = base_url, model, api_key_env
        # Local servers (vLLM, Ollama) accept any key; the client insists on a non-empty one.
        self._key = os.environ.get(api_key_env) or "EMPTY"
        self.key_from_env = api_key_env in os.environ
        import openai  # imported here so that the task editor works without the openai package

        # The client's own retries are off: ours are counted, logged and bounded by our settings.
        self._client = openai.OpenAI(base_url=base_url, api_key=self._key, timeout=timeout, max_retries=0)
        self.max_retries, self.backoff_base, self.backoff_max = max_retries, backoff_base, backoff_max
        self.params = dict(params or {})
        self.cache = ResponseCache(cache_dir) if cache_dir is not None else None
        self._lock = threading.Lock()
        self.stats = {"requests": 0, "retries": 0, "cache_hits": 0}

    def _count(self, name: str) -> None:
        with self._lock:
            self.stats[name] += 1

    def scrub(self, text: str) -> str:
        """`text` with the API key removed (servers sometimes echo it in error bodies)."""
        return text.replace(self._key, "***") if self._key != "EMPTY" else text

    def _delay(self, attempt: int, error: Exception) -> float:
        delay = min(self.backoff_max, self.backoff_base * 2**attempt) * random.uniform(0.5, 1.0)
        retry_after = getattr(getattr(error, "response", None), "headers", {}).get("retry-after")
        if retry_after:
            try:  # a 429 that says when to come back: wait at least that long (within the cap)
                delay = max(delay, min(float(retry_after), self.backoff_max))
            except ValueError:
                pass
        return delay

    def _request(self, messages: list[dict[str, str]], params: dict[str, Any]) -> str:
        self._count("requests")
        resp = self._client.chat.completions.create(model=self.model, messages=messages, **params)
        if not resp.choices or resp.choices[0].message.content is None:
            raise RequestFailed("the server returned no message content")
        choice = resp.choices[0]
        if choice.finish_reason == "length":
            # A cut-off revision would look like a deletion of its tail: never use (or cache) it.
            raise RequestFailed("the reply was cut off at max_tokens; raise --max-tokens")
        return choice.message.content

    def complete(self, messages: list[dict[str, str]], **params: Any) -> str:
        """The reply text to `messages`, from the cache or the server; raises RequestFailed."""
        import openai

        params = {**self.params, **params}
        key = request_key(self.model, messages, params)
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            self._count("cache_hits")
            return hit
        for attempt in range(self.max_retries + 1):
            try:
                reply = self._request(messages, params)
                break
            except openai.APIStatusError as e:
                if e.status_code in FATAL_STATUS:
                    # Every other request would fail the same way: stop the run (progress is kept).
                    raise InputError(f"{FATAL_STATUS[e.status_code]} (HTTP {e.status_code} from {self.base_url}, "
                                     f"model '{self.model}', key from ${self.api_key_env})",
                                     field="--base-url") from None
                retryable = e.status_code in RETRYABLE_STATUS or e.status_code >= 500
                error: Exception = e
                reason = f"HTTP {e.status_code}: {self.scrub(str(e.message))[:200]}"
            except openai.APIConnectionError as e:  # includes APITimeoutError
                retryable, error = True, e
                reason = f"{type(e).__name__}: {self.scrub(str(e))[:200]}"
            if not retryable or attempt == self.max_retries:
                tries = attempt + 1
                raise RequestFailed(f"{reason} (after {tries} attempt{'s' * (tries > 1)})") from None
            self._count("retries")
            time.sleep(self._delay(attempt, error))
        if self.cache is not None:
            self.cache.put(key, self.model, reply)
        return reply


def make_client(base_url: str | None, model: str | None, *, temperature: float = 0.0, max_tokens: int | None = None,
                **options: Any) -> ChatClient:
    """The client editors and judges use: every request at `temperature` (0, greedy, so that a rerun asks the
    same question and the cache answers it) and capped at `max_tokens` when given (else the server's default).
    `options` (api_key_env, timeout, max_retries, backoff_base, cache_dir) go to `ChatClient`."""
    params: dict[str, Any] = {"temperature": temperature}
    if max_tokens is not None:
        params["max_tokens"] = max_tokens
    return ChatClient(base_url or "", model or "", params=params, **options)
