"""What an LLM editor is asked, and how its reply becomes an edit.

The prompt asks for a *minimal* revision (the paper's annotators changed only what was needed and kept the
rest verbatim) and for the whole revised text only, so that the reply can be aligned with the original
token by token. A user template (`--template FILE`) replaces the user message; it may use the
placeholders `{prompt}`, `{rejected}` and `{chosen}`, and any other braces are left as they are.
"""
from __future__ import annotations

import re
from pathlib import Path

from fgalign.errors import InputError

SYSTEM = ("You are a careful annotator. You improve a response by editing it minimally: fix only what is "
          "wrong (wrong facts, wrong or repeated items, rude words, unhelpful parts) and copy everything else "
          "exactly, character for character. Reply with the whole revised response and nothing else: no "
          "preamble, no quotes, no explanation.")

USER = """Prompt:
{prompt}

Response to revise:
{rejected}

Write the minimally revised response."""

USER_WITH_HINT = """Prompt:
{prompt}

A better response, for reference only (do not copy it; edit the response below):
{chosen}

Response to revise:
{rejected}

Write the minimally revised response."""

STRICT = ("Your previous revision changed too much. Change as few words as possible: keep every correct "
          "word, its order and its punctuation exactly as in the response to revise.")

PLACEHOLDER = re.compile(r"\{(prompt|rejected|chosen)\}")


def load_template(path: str | None) -> str | None:
    """Read a user template file; it must place `{rejected}` somewhere."""
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        raise InputError("no such template file", path=str(p), field="--template")
    text = p.read_text(encoding="utf-8")
    if "{rejected}" not in text:
        raise InputError("the template must contain the placeholder {rejected} (and may use {prompt}, {chosen})",
                         path=str(p), field="--template")
    return text


def fill(template: str, prompt: str, rejected: str, chosen: str | None) -> str:
    """Substitute only our three placeholders (str.format would choke on JSON examples in a template)."""
    values = {"prompt": prompt, "rejected": rejected, "chosen": chosen or ""}
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def edit_messages(prompt: str, rejected: str, chosen: str | None = None, *, template: str | None = None,
                  hint_chosen: bool = False, strict: bool = False) -> list[dict[str, str]]:
    """Chat messages asking for a minimal edit of `rejected` (stricter wording on a re-ask)."""
    user = template if template is not None else (USER_WITH_HINT if hint_chosen and chosen else USER)
    system = SYSTEM + (" " + STRICT if strict else "")
    return [{"role": "system", "content": system},
            {"role": "user", "content": fill(user, prompt, rejected, chosen if hint_chosen or template else None)}]


FENCE = re.compile(r"^```[\w-]*\n(.*)\n```$", re.DOTALL)
PREAMBLE = re.compile(r"^(?:here is|here's|revised response|revision|edited response)[^\n]*:\s*\n", re.IGNORECASE)


def clean_reply(reply: str, rejected: str) -> str:
    """The edit inside an LLM reply: drop a code fence or a one-line preamble the model added anyway, and
    keep the original's leading/trailing whitespace (models strip it; it is not an edit)."""
    text = reply.strip()
    if (m := FENCE.match(text)) and not rejected.lstrip().startswith("```"):
        text = m.group(1).strip()
    if PREAMBLE.match(text) and not PREAMBLE.match(rejected.strip()):
        text = PREAMBLE.sub("", text, count=1).strip()
    lead = rejected[: len(rejected) - len(rejected.lstrip())]
    trail = rejected[len(rejected.rstrip()):]
    return lead + text + trail
