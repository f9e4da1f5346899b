"""An LLM behind any OpenAI-compatible chat-completions endpoint as the minimal editor.

Greedy by default (temperature 0) so that a rerun asks the same question and the cache answers it.
"""
from __future__ import annotations

from fgalign.editors.prompts import clean_reply, edit_messages
from fgalign.llm.client import ChatClient


class OpenAIEditor:
    """Edits through `ChatClient` (retries, backoff, cache); `edit_strict` is the re-ask after an over-edit."""

    def __init__(self, client: ChatClient, *, template: str | None = None, hint_chosen: bool = False):
        self.client, self.template, self.hint_chosen = client, template, hint_chosen
        self.name = f"openai:{client.model}"

    def _ask(self, prompt: str, rejected: str, chosen: str | None, strict: bool) -> str:
        messages = edit_messages(prompt, rejected, chosen, template=self.template, hint_chosen=self.hint_chosen,
                                 strict=strict)
        return clean_reply(self.client.complete(messages), rejected)

    def edit(self, prompt: str, rejected: str, chosen: str | None = None) -> str:
        return self._ask(prompt, rejected, chosen, strict=False)

    def edit_strict(self, prompt: str, rejected: str, chosen: str | None = None) -> str:
        return self._ask(prompt, rejected, chosen, strict=True)
