"""fgalign's reward model as an OpenRLHF remote reward (`--reward.remote_url`): the RM's sequence score.

OpenRLHF 0.11 takes one number per response and puts it on the last token, so this returns the RM's
*sequence* score (for a token RM the mean r_t over the response): the per-token credit a token RM gives —
which tokens were wrong — is lost on the way. (`fgalign ppo` or the verl plug-in keep it.)

Two forms, both speaking OpenRLHF's protocol (queries = prompt + response as the policy decoded them with
special tokens, prompts = the prompts; back: {"rewards": [...], "scores": [...], "extra_logs": {...}}):

    # an HTTP server (stdlib only); then  --reward.remote_url http://HOST:5000/get_reward
    python -m fgalign.integrations.openrlhf --rm RUN/rm-token --policy-tokenizer PATH --port 5000
    # reachable from other machines: a bearer token from the environment, required for any host but loopback
    FGALIGN_REWARD_TOKEN=$(openssl rand -hex 16) python -m fgalign.integrations.openrlhf ... --host 0.0.0.0
    #   then  --reward.remote_url "http://HOST:5000/get_reward?token=$FGALIGN_REWARD_TOKEN"
    # or a reward-function file, loaded by OpenRLHF in its own processes:
    FGALIGN_RM=RUN/rm-token FGALIGN_POLICY_TOKENIZER=PATH  ... --reward.remote_url $(python -c \
        "import fgalign.integrations.openrlhf as m; print(m.__file__)")

A reward endpoint anyone on the network can post to lets them steer training (OpenRLHF #1317 reports it for
OpenRLHF's own server), so with a token set every POST must carry it, as `Authorization: Bearer TOKEN` or, since
OpenRLHF 0.11 sends no headers of its own, as `?token=TOKEN` in the URL it is given; and a `--host` other than
loopback is refused without one.

The response is the query after the prompt. When it ends with the policy's EOS text it was finished: the
RM's EOS is appended (as in fgalign's own scoring); otherwise it was cut at the length limit and is scored
as it stands.
"""
from __future__ import annotations

import argparse
import dataclasses
import hmac
import ipaddress
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Sequence
from urllib.parse import parse_qs, urlsplit

from fgalign.errors import InputError
from fgalign.models.reward import RewardModel, load_reward_model
from fgalign.rl.rewards import SEQUENCE_AT_LAST

# What OpenRLHF's one number per response can carry, in fgalign ppo's terms (its `--reward sequence
# --reward-scale raw`): the RM's sequence score at the last token. The health reply names it.
REWARD_SETTINGS = SEQUENCE_AT_LAST

TOKEN_ENV = "FGALIGN_REWARD_TOKEN"  # the default variable the server's bearer token is read from


class SequenceScorer:
    """Turns OpenRLHF's (query, prompt) texts into the RM's sequence scores."""

    def __init__(self, rm: RewardModel, eos_texts: Sequence[str] = ()):
        self.rm = rm
        # Longest first, so "</s>" is not taken for a shorter end string that it contains.
        self.eos_texts = sorted({t for t in (*eos_texts, rm.tokenizer.eos_token) if t}, key=len, reverse=True)
        self.lock = threading.Lock()  # one forward pass at a time; the server handles requests in threads

    def split(self, query: str, prompt: str) -> tuple[str, str, bool]:
        """(prompt, response, ended with EOS). The query is prompt + response as the policy decoded them."""
        at = query.find(prompt) if prompt else 0
        if at < 0:
            raise InputError("the query does not contain its prompt", field="prompts")
        response = query[at + len(prompt):]
        for eos in self.eos_texts:
            if response.endswith(eos):
                while response.endswith(eos):  # vLLM may leave padding EOS after the first one
                    response = response[: -len(eos)]
                return prompt, response, True
        return prompt, response, False

    def score(self, queries: Sequence[str], prompts: Sequence[str]) -> list[float]:
        if len(queries) != len(prompts):
            raise InputError(f"{len(queries)} queries but {len(prompts)} prompts", field="prompts")
        prompt_ids, response_ids = [], []
        for query, prompt in zip(queries, prompts):
            p, r, ended = self.split(query, prompt)
            ids = self.rm.encode_response(r, add_eos=ended)
            prompt_ids.append(self.rm.encode_prompt(p))
            response_ids.append(ids or self.rm.encode_response(r, add_eos=True))  # an empty one: its EOS alone
        if not response_ids:
            return []
        with self.lock:
            out = self.rm.score_ids(prompt_ids, response_ids)
        return [float(s) for s in out.sequence_score]

    def reply(self, payload: dict) -> dict:
        """OpenRLHF's request -> its reply (as `openrlhf.cli.serve_rm` shapes it)."""
        queries, prompts = payload.get("query"), payload.get("prompts")
        if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
            raise InputError("expected a list of strings", field="query")
        if prompts is None:
            prompts = [""] * len(queries)
        if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
            raise InputError("expected a list of strings", field="prompts")
        scores = self.score(queries, prompts)
        return {"rewards": scores, "scores": scores, "extra_logs": {"fgalign_sequence_score": scores}}


def is_loopback(host: str) -> bool:
    """Only this machine can connect (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def make_handler(scorer: SequenceScorer, token: str | None = None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _authorised(self) -> bool:
            if not token:
                return True
            header = self.headers.get("Authorization") or ""
            given = header[len("Bearer "):] if header.startswith("Bearer ") else None
            if given is None:
                given = (parse_qs(urlsplit(self.path).query).get("token") or [None])[0]
            return given is not None and hmac.compare_digest(given.encode(), token.encode())

        def _send(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._send(200, {"status": "ok", "reward": dataclasses.asdict(REWARD_SETTINGS)})

        def do_POST(self) -> None:  # noqa: N802 - any path: OpenRLHF posts to the URL it was given
            if not self._authorised():
                self._send(401, {"error": "a bearer token is required (Authorization: Bearer TOKEN or ?token=TOKEN)"})
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
                payload = json.loads(self.rfile.read(length) or b"null")
                if not isinstance(payload, dict):
                    raise InputError("expected a JSON object with 'query' and 'prompts'")
                self._send(200, scorer.reply(payload))
            except (InputError, ValueError) as e:  # bad request: say why, keep serving
                self._send(400, {"error": str(e)})

        def log_message(self, fmt: str, *args: Any) -> None:  # quiet: one line per request is too much
            pass

    return Handler


def check_host(host: str, token: str | None) -> None:
    """Refuse to serve rewards beyond this machine without a token."""
    if not token and not is_loopback(host):
        raise InputError(f"host '{host}' is reachable from other machines: set a bearer token in ${TOKEN_ENV} (or "
                         "the variable --token-env names), or serve on 127.0.0.1", field="--host")


def serve(scorer: SequenceScorer, host: str = "127.0.0.1", port: int = 5000,
          token: str | None = None) -> ThreadingHTTPServer:
    """A started-by-the-caller server (`.serve_forever()`); port 0 picks a free one (`server.server_port`).
    Every POST must carry `token` when one is given; a non-loopback `host` without one is refused."""
    check_host(host, token)
    return ThreadingHTTPServer((host, port), make_handler(scorer, token))


def load_scorer(rm: str, policy_tokenizer: str | None = None, eos_texts: Sequence[str] = (),
                device: str = "auto") -> SequenceScorer:
    texts = list(eos_texts)
    if policy_tokenizer:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(policy_tokenizer)
        texts += [t for t in (tok.eos_token, tok.pad_token) if t]
    return SequenceScorer(load_reward_model(rm, device=device), texts)


# ---- OpenRLHF's reward-function file form ----------------------------------------------------------------
_SCORER: SequenceScorer | None = None


def reward_func(queries: list[str], prompts: list[str], labels: list[Any], **_: Any) -> dict:
    """OpenRLHF calls this when `--reward.remote_url` is this file; the RM comes from $FGALIGN_RM."""
    global _SCORER
    if _SCORER is None:
        if not os.environ.get("FGALIGN_RM"):
            raise InputError("set FGALIGN_RM to an fgalign reward model directory", field="FGALIGN_RM")
        _SCORER = load_scorer(os.environ["FGALIGN_RM"], os.environ.get("FGALIGN_POLICY_TOKENIZER"),
                              device=os.environ.get("FGALIGN_DEVICE", "auto"))
    return _SCORER.reply({"query": list(queries), "prompts": list(prompts)})


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fgalign.integrations.openrlhf", description=__doc__.split("\n")[0])
    ap.add_argument("--rm", required=True, help="reward model directory (fgalign train-rm)")
    ap.add_argument("--policy-tokenizer", help="the policy's tokenizer directory: its EOS/pad text ends a response")
    ap.add_argument("--eos-text", action="append", default=[], help="more text that marks a finished response")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on; other than loopback needs a token")
    ap.add_argument("--token-env", default=TOKEN_ENV,
                    help=f"environment variable holding the bearer token every request must carry (default {TOKEN_ENV})")
    ap.add_argument("--port", type=int, default=5000)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    token = os.environ.get(args.token_env) or None
    try:
        check_host(args.host, token)  # before the RM is loaded
        scorer = load_scorer(args.rm, args.policy_tokenizer, args.eos_text, args.device)
        server = serve(scorer, args.host, args.port, token)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"fgalign reward server on http://{args.host}:{server.server_port}/get_reward", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
