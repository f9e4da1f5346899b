"""The OpenAI-compatible editor and judge against a real HTTP server speaking chat completions.

The server (127.0.0.1, a free port, a thread) answers through the real `openai` client with canned replies
keyed on the text to revise: one fails with 500 once, one is rate-limited once, one always times out, one
is over-edited, one echoes the API key in a 400 error, one blocks until the test lets it go.
"""
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fgalign.cli import main
from fgalign.data import read_records
from fgalign.editors.base import edit_ratio
from fgalign.editors.progress import progress_path
from fgalign.editors.stage import EditConfig, run
from fgalign.eval.judges import OpenAIJudge

KEY = "sk-test-NEVER-PRINT-4242"
REWRITE = "Totally different words that share nothing at all with the original text, none."
REVISE = re.compile(r"Response to revise:\n(.*)\n\nWrite the minimally", re.DOTALL)
JUDGED = re.compile(r"\[Response A\]\n(.*)\n\n\[Response B\]\n(.*)\n\nWhich", re.DOTALL)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.requests: Counter = Counter()  # (model, text, strict) -> requests received
        self.auth: set[str] = set()
        self.lock = threading.Lock()
        self.slow = True  # SLOW records sleep past the client's timeout while this holds
        self.blocked, self.release = threading.Event(), threading.Event()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def total(self, model="editor"):
        return sum(n for (m, *_), n in self.requests.items() if m == model)


class Handler(BaseHTTPRequestHandler):
    server: Server

    def log_message(self, *args):  # keep the test output clean
        pass

    def send(self, status, body, headers=()):
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout) or was killed
            pass

    def error(self, status, message, headers=()):
        self.send(status, {"error": {"message": message, "type": "server_error", "code": status}}, headers)

    def reply(self, model, content):
        self.send(200, {
            "id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()), "model": model,
            "system_fingerprint": "fp_test",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": None},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 50, "completion_tokens": len(content.split()), "total_tokens": 60}})

    def do_POST(self):
        if self.path != "/v1/chat/completions":
            return self.error(404, f"no route {self.path}")
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        model, messages = body["model"], body["messages"]
        self.server.auth.add(self.headers.get("Authorization", ""))
        if model == "locked":
            return self.error(401, f"Incorrect API key provided: {self.headers.get('Authorization')}")
        if model.startswith("judge"):
            return self.judge(model, messages[-1]["content"])
        text = REVISE.search(messages[-1]["content"]).group(1)
        strict = "changed too much" in messages[0]["content"]
        with self.server.lock:
            self.server.requests[(model, text, strict)] += 1
            n = self.server.requests[(model, text, strict)]
        if "FAIL-ONCE" in text and n == 1:
            return self.error(500, "internal error, try again")
        if "RATE" in text and n == 1:
            return self.error(429, "rate limited", headers=[("Retry-After", "0")])
        if "ECHO400" in text:
            return self.error(400, f"bad request from {self.headers.get('Authorization')}")
        if "SLOW" in text and self.server.slow:
            time.sleep(1.0)
        if "BLOCK" in text and not self.server.release.is_set():
            self.server.blocked.set()
            self.server.release.wait(60)
        if "REWRITE" in text and not ("REWRITE-ONCE" in text and strict):
            return self.reply(model, REWRITE)
        edited = text.replace("bad", "good")
        if "FENCE" in text:  # a chatty model: preamble and a code fence around the edit
            return self.reply(model, f"```\n{edited}\n```")
        return self.reply(model, edited)

    def judge(self, model, user):
        a, b = JUDGED.search(user).groups()
        with self.server.lock:
            self.server.requests[(model, a, b)] += 1
        if model == "judge-always-a":  # pure position bias
            return self.reply(model, "A")
        if "good" in a and "good" not in b:
            return self.reply(model, "[[A]]")
        if "good" in b and "good" not in a:
            return self.reply(model, '{"winner": "Response B"}')
        return self.reply(model, "Response A is better.")  # biased when it cannot tell


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    srv = Server()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()


def write_pairs(path, rejected):
    path.write_text("".join(json.dumps({"prompt": f"Question {i}?", "chosen": "a fine answer", "rejected": r}) + "\n"
                            for i, r in enumerate(rejected)))
    return path


def edit_config(src, out, url, **kw):
    return EditConfig(data=str(src), out=str(out), editor="openai", base_url=url, model="editor", timeout=0.5,
                      max_retries=2, backoff_base=0.01, concurrency=4, **kw)


def assert_no_key_in(folder: Path, *texts: str):
    for text in texts:
        assert KEY not in text
    for p in folder.rglob("*"):
        if p.is_file():
            assert KEY.encode() not in p.read_bytes(), f"the API key leaked into {p}"


REJECTED = ["a bad answer", "a fine answer", "FAIL-ONCE a bad one", "SLOW but bad", "REWRITE this bad one",
            "REWRITE-ONCE a bad thing here", "ECHO400 bad", "RATE bad", "FENCE a bad reply"]


def test_counts_retries_failures_cache_and_no_key_leak(tmp_path, server, capsys):
    src = write_pairs(tmp_path / "pairs.jsonl", REJECTED)
    out = tmp_path / "edits.jsonl"
    counts = run(edit_config(src, out, server.url))
    assert (counts["kept"], counts["noop"], counts["overedit"], counts["failed"]) == (5, 1, 1, 2)
    assert counts["reasked"] == 2 and counts["done"] == 7
    req = server.requests
    assert req[("editor", "FAIL-ONCE a bad one", False)] == 2  # 500, then retried
    assert req[("editor", "RATE bad", False)] == 2  # 429, then retried
    assert req[("editor", "SLOW but bad", False)] == 3  # timed out on all 1 + max_retries attempts
    assert req[("editor", "ECHO400 bad", False)] == 1  # a 400 is not retried
    assert req[("editor", "REWRITE this bad one", True)] == 1  # the strict re-ask
    assert counts["retries"] == 4 and counts["requests"] == server.total()
    assert f"Bearer {KEY}" in server.auth  # the key from the environment is used ...

    recs = {r.rejected: r for r in read_records(out)}
    assert recs["FENCE a bad reply"].edited == "FENCE a good reply"  # fence stripped
    assert recs["REWRITE-ONCE a bad thing here"].meta["edit_reasked"] is True
    ratio = edit_ratio("a bad answer", "a good answer")
    assert recs["a bad answer"].meta == {"editor": "openai:editor", "edit_ratio": pytest.approx(ratio, abs=1e-6)}
    errors = [json.loads(x).get("error", "") for x in progress_path(out).read_text().splitlines()[1:]]
    assert any("HTTP 400" in e and "***" in e for e in errors)  # recorded, with the echoed key scrubbed

    # Rerun: only the failed records are asked again (SLOW now answers), everything else is skipped.
    server.slow = False
    before = server.total()
    again = run(edit_config(src, out, server.url, retry_failed=True))
    assert again["edited_now"] == 2 and (again["kept"], again["failed"]) == (6, 1)
    assert server.total() == before + 2

    # The cache: with the progress file gone, a rerun pays only for what never succeeded (the 400).
    progress_path(out).unlink()
    out.unlink()
    before = server.total()
    cached = run(edit_config(src, out, server.url))
    assert server.total() == before + 1 and cached["cache_hits"] == 10
    assert (cached["kept"], cached["failed"]) == (6, 1)
    assert_no_key_in(tmp_path, *capsys.readouterr())  # ... and never written or printed


def test_resume_after_kill(tmp_path, server):
    rejected = ["r0 bad", "r1 bad", "r2 bad", "BLOCK r3 bad", "r4 bad", "r5 bad"]
    src = write_pairs(tmp_path / "pairs.jsonl", rejected)
    out = tmp_path / "edits.jsonl"
    cmd = [sys.executable, "-m", "fgalign.cli", "edit", "--data", str(src), "--out", str(out), "--editor", "openai",
           "--base-url", server.url, "--model", "editor", "--concurrency", "1", "--timeout", "30"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OPENAI_API_KEY": KEY})
    try:
        assert server.blocked.wait(120), "the subprocess never reached the blocking record"
        lines = progress_path(out).read_text().splitlines()
        assert len(lines) == 1 + 3  # settings + the three records finished before the block
    finally:
        proc.send_signal(signal.SIGKILL)
        stdout, stderr = proc.communicate()
        server.release.set()
    assert proc.returncode == -signal.SIGKILL and not out.exists()  # no final output from a killed run

    counts = run(edit_config(src, out, server.url))
    assert counts["edited_now"] == 3 and counts["kept"] == 6 and counts["failed"] == 0
    assert [server.requests[("editor", r, False)] for r in rejected] == [1, 1, 1, 2, 1, 1]
    entries = [json.loads(x) for x in progress_path(out).read_text().splitlines()[1:]]
    assert len(entries) == 6 and len({e["key"] for e in entries}) == 6  # each record done exactly once
    assert [r.edited for r in read_records(out)] == [r.replace("bad", "good") for r in rejected]
    assert_no_key_in(tmp_path, stdout, stderr)


def test_rejected_key_stops_the_run_without_printing_it(tmp_path, server, capsys):
    src = write_pairs(tmp_path / "pairs.jsonl", ["a bad answer"])
    out = tmp_path / "edits.jsonl"
    assert main(["edit", "--data", str(src), "--out", str(out), "--editor", "openai", "--base-url", server.url,
                 "--model", "locked", "--backoff-base", "0.01"]) == 2
    err = capsys.readouterr().err
    assert "refused the API key" in err and "$OPENAI_API_KEY" in err
    assert not out.exists()
    assert_no_key_in(tmp_path, err)


def test_template_file_and_chosen_hint(tmp_path, server):
    template = tmp_path / "template.txt"
    # the server finds the text to revise with the default wording; {"json": braces} must survive untouched
    template.write_text('Reply as {"json": false}. Hint: {chosen}\nResponse to revise:\n{rejected}\n\n'
                        "Write the minimally revised response.")
    src = write_pairs(tmp_path / "pairs.jsonl", ["a bad answer"])
    counts = run(edit_config(src, tmp_path / "out.jsonl", server.url, template=str(template)))
    assert counts["kept"] == 1 and server.requests[("editor", "a bad answer", False)] == 1


def test_judge_asks_both_orders_and_cancels_position_bias(tmp_path, server):
    common = dict(timeout=0.5, max_retries=1, backoff_base=0.01, cache_dir=tmp_path / "cache")
    biased = OpenAIJudge(server.url, "judge-always-a", **common)
    assert biased.compare_many(["p", "q"], ["good x", "bad y"], ["bad y", "good x"]) == [0.5, 0.5]
    # each pair asked in both orders (the prompts differ, so nothing comes from the cache)
    assert server.requests[("judge-always-a", "good x", "bad y")] == server.requests[
        ("judge-always-a", "bad y", "good x")] == 2

    fair = OpenAIJudge(server.url, "judge-fair", **common)
    scores = fair.compare_many(["p"] * 3, ["good x", "bad y", "good z"], ["bad y", "good x", "good w"])
    assert scores == [1.0, 0.0, 0.5]  # the last pair: "A" in both orders is a disagreement, hence a tie
    assert fair.unparsed == 0
    before = server.total("judge-fair")
    assert fair.compare_many(["p"], ["good x"], ["bad y"]) == [1.0]
    assert server.total("judge-fair") == before  # cached
    assert_no_key_in(tmp_path)


@pytest.mark.parametrize("reply,verdict", [
    ("A", "A"), ("b.", "B"), ("Response B", "B"), ("[[A]]", "A"), ("[[C]]", "tie"), ("Tie.", "tie"),
    ('{"winner": "B"}', "B"), ('```json\n{"verdict": "Response A"}\n```', "A"), ("Output (a) is better.", "A"),
    ("Response A is better than Response B.", "A"), ("The better response is B.", "B"), ("Verdict: A", "A"),
    ("Both are equally good.", "tie"), ("Let me think. A is short... [[B]]", "B"), ("I cannot decide", None),
])
def test_parse_verdict(reply, verdict):
    from fgalign.eval.judges import parse_verdict

    assert parse_verdict(reply) == verdict
