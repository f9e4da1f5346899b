"""The prompt as the task gave it, recovered from what an engine hands a reward: no engine imported here.

An engine (verl, OpenRLHF) renders a prompt through the *policy's* chat template before generating, and the
reward side gets those ids back. A reward model trained by fgalign saw the task's own prompt text (run through
its own template, if it has one: `data.tokenize.encode_prompt`); given the policy's template decoded as text,
it would read "system\nYou are a helpful AI assistant ...user\nList 3 fruits:" — or wrap that whole text in a
second template. Two ways back to the plain prompt:

- `prompt_from_messages`: the chat messages the engine kept beside the ids (verl's `raw_prompt`);
- `user_prompt`: the decoded prompt ids, with the template stripped off by rendering it around a marker.
"""
from __future__ import annotations

from typing import Any, Sequence

MARK, SYSTEM_MARK = "\ue000fgalign-user\ue001", "\ue000fgalign-system\ue001"  # private-use: in no real prompt


def _render(tokenizer: Any, messages: list[dict]) -> str | None:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception:  # noqa: BLE001 - a template may refuse a role (no system turn) or raise on its own
        return None


def _without_bos(tokenizer: Any, text: str) -> str:
    bos = getattr(tokenizer, "bos_token", None)
    while bos and text.startswith(bos):  # a tokenizer may add BOS in front of a template that holds one
        text = text[len(bos):]
    return text


def user_prompt(tokenizer: Any, prompt_ids: Sequence[int]) -> str | None:
    """The user message inside `prompt_ids` when they are the tokenizer's chat template around one user message
    (after the template's default system turn or a system message of the user's), else None — a longer
    conversation included.

    The template is rendered around markers, once with a user message alone and once after a system message;
    the text around the markers is the template's, and what the decoded ids hold in their place is the user's
    (and the system's). A part that holds one of the template's special tokens is not one message: None."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    text = _without_bos(tokenizer, tokenizer.decode(list(prompt_ids), skip_special_tokens=False,
                                                    clean_up_tokenization_spaces=False))
    alone = _render(tokenizer, [{"role": "user", "content": MARK}])
    if alone is None or MARK not in alone:
        return None
    specials = [t for t in tokenizer.all_special_tokens if t and t in alone]

    def one_message(part: str) -> bool:
        return not any(t in part for t in specials)

    before, _, after = _without_bos(tokenizer, alone).partition(MARK)
    if len(text) >= len(before) + len(after) and text.startswith(before) and text.endswith(after):
        middle = text[len(before): len(text) - len(after)]
        if one_message(middle):
            return middle
    both = _render(tokenizer, [{"role": "system", "content": SYSTEM_MARK}, {"role": "user", "content": MARK}])
    if both is None or SYSTEM_MARK not in both or MARK not in both:
        return None
    before, _, rest = _without_bos(tokenizer, both).partition(SYSTEM_MARK)
    opener, _, after = rest.partition(MARK)
    if not opener or len(text) < len(before) + len(after) or not (text.startswith(before) and text.endswith(after)):
        return None
    system, found, middle = text[len(before): len(text) - len(after)].partition(opener)
    return middle if found and one_message(system) and one_message(middle) else None


def prompt_from_messages(messages: Any, rm_tokenizer: Any) -> str | list[dict] | None:
    """What the RM is given for an engine's chat messages: the user's text when there is one user message
    (system messages dropped: fgalign's RMs are trained on the task's prompt); a longer conversation as
    messages (the RM renders them with its own template) or, for an RM without one, as "role: content" lines.
    None when `messages` is neither a string nor a list of {role, content} dicts."""
    if isinstance(messages, str):
        return str(messages)
    try:
        messages = [dict(m) for m in messages]
        roles = [str(m["role"]) for m in messages]
        contents = [m["content"] for m in messages]
    except (TypeError, KeyError, ValueError):
        return None
    if not all(isinstance(c, str) for c in contents) or not messages:
        return None  # multimodal content parts: nothing fgalign's RMs read
    users = [c for r, c in zip(roles, contents) if r == "user"]
    if len(users) == 1 and all(r in ("system", "user") for r in roles):
        return users[0]
    if getattr(rm_tokenizer, "chat_template", None):
        return [{"role": r, "content": c} for r, c in zip(roles, contents)]
    return "\n".join(f"{r}: {c}" for r, c in zip(roles, contents))


def reward_prompts(prompt_ids: Sequence[Sequence[int]], tokenizer: Any, rm_tokenizer: Any,
                   messages: Sequence[Any] | None = None) -> list[str | list[dict]]:
    """The prompt of each row as the RM should read it: from the engine's messages when it kept them, else from
    the ids with the policy's template stripped (`user_prompt`), else the ids decoded without special tokens."""
    out: list[str | list[dict]] = []
    for i, ids in enumerate(prompt_ids):
        prompt = prompt_from_messages(messages[i], rm_tokenizer) if messages is not None else None
        if prompt is None:
            prompt = user_prompt(tokenizer, ids)
        if prompt is None:
            prompt = tokenizer.decode(list(ids), skip_special_tokens=True)
        out.append(prompt)
    return out
