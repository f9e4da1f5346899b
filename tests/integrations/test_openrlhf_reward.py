"""The OpenRLHF remote reward: a real server process on 127.0.0.1, queried the way OpenRLHF 0.11 queries it
(POST {"query", "prompts", "labels"}; the query is prompt + response decoded with special tokens)."""
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
import torch

from fgalign.integrations import openrlhf
from fgalign.models.reward import build_reward_model, head_module, load_reward_model

PROMPT, FINISHED, CUT = "List 3 fruits:", " apple, banana, cherry.", " cat, dog, horse, cow, cat"


@pytest.fixture(scope="module")
def rm_dir(tiny_policy_dir, tmp_path_factory):
    torch.manual_seed(3)
    rm = build_reward_model(tiny_policy_dir, "token", "mistake-bce")
    torch.nn.init.normal_(head_module(rm.model).weight, std=1.0)
    out = tmp_path_factory.mktemp("rm")
    rm.save(out)
    return out


def post(url, payload):
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def expected_scores(rm_dir):
    """Token RM's sequence score = mean r_t over the response; EOS only on the finished response."""
    rm = load_reward_model(rm_dir, device="cpu")
    p = rm.encode_prompt(PROMPT)
    out = rm.score_ids([p, p], [rm.encode_response(FINISHED, add_eos=True), rm.encode_response(CUT, add_eos=False)])
    with torch.no_grad():  # the same, straight from the head
        ids = p + rm.encode_response(FINISHED, add_eos=True)
        direct = rm.model(input_ids=torch.tensor([ids])).logits[0, len(p):, 0].mean().item()
    assert out.sequence_score[0].item() == pytest.approx(direct, abs=1e-5)
    return out.sequence_score.tolist(), rm.tokenizer.eos_token


def test_server_returns_the_sequence_score_openrlhf_expects(rm_dir, tiny_policy_dir):
    expected, eos = expected_scores(rm_dir)
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "fgalign.integrations.openrlhf", "--rm", str(rm_dir),
                             "--policy-tokenizer", str(tiny_policy_dir), "--port", "0", "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert "http://127.0.0.1:" in line, proc.stderr.read() if proc.poll() is not None else line
        url = line.split()[-1]
        queries = [PROMPT + FINISHED + eos, PROMPT + CUT]  # finished (EOS decoded as text) and cut at the limit
        status, body = post(url, {"query": queries, "prompts": [PROMPT, PROMPT], "labels": [None, None]})
        assert status == 200
        assert body["rewards"] == pytest.approx(expected, abs=1e-5)
        assert body["scores"] == body["rewards"] and body["extra_logs"]["fgalign_sequence_score"] == body["rewards"]
        assert body["rewards"][0] != pytest.approx(body["rewards"][1], abs=1e-3)
        status, body = post(url, {"query": [PROMPT + FINISHED], "prompts": ["another prompt"]})
        assert status == 400 and "prompt" in body["error"]  # a bad request is answered, the server stays up
        status, body = post(url, {"query": "not a list"})
        assert status == 400 and "query" in body["error"]
        with urllib.request.urlopen(url.replace("/get_reward", "/health"), timeout=10) as resp:
            # fgalign ppo's terms for what it serves: the sequence score at the last token, unscaled
            assert resp.status == 200 and json.loads(resp.read())["reward"]["reward"] == "sequence"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_reward_func_file_form_matches_and_missing_rm_exits_2(rm_dir, tiny_policy_dir, monkeypatch, tmp_path):
    expected, eos = expected_scores(rm_dir)
    monkeypatch.setenv("FGALIGN_RM", str(rm_dir))
    monkeypatch.setenv("FGALIGN_DEVICE", "cpu")
    monkeypatch.setattr(openrlhf, "_SCORER", None)
    out = openrlhf.reward_func([PROMPT + FINISHED + eos, PROMPT + CUT], [PROMPT, PROMPT], [None, None])
    assert out["rewards"] == pytest.approx(expected, abs=1e-5)
    assert openrlhf.main(["--rm", str(tmp_path / "nope")]) == 2


def test_a_token_guards_the_server_and_other_hosts_need_one(rm_dir, tiny_policy_dir, monkeypatch, tmp_path, capsys):
    import threading

    server = openrlhf.serve(openrlhf.load_scorer(str(rm_dir), str(tiny_policy_dir), device="cpu"), "127.0.0.1", 0,
                            token="s3cret")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/get_reward"
        payload = {"query": [PROMPT + FINISHED], "prompts": [PROMPT]}
        assert post(url, payload)[0] == 401
        assert post(url + "?token=wrong", payload)[0] == 401
        assert post(url + "?token=s3cret", payload)[0] == 200  # the form OpenRLHF can send: it adds no headers
        req = urllib.request.Request(url, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json", "Authorization": "Bearer s3cret"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            assert resp.status == 200 and len(json.loads(resp.read())["rewards"]) == 1
    finally:
        server.shutdown()
        server.server_close()
    # Any address but loopback without a token: refused by name, before the RM is loaded (this one does not exist).
    monkeypatch.delenv(openrlhf.TOKEN_ENV, raising=False)
    assert openrlhf.main(["--rm", str(tmp_path / "no-rm"), "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "field '--host'" in err and openrlhf.TOKEN_ENV in err and "no-rm" not in err
    for host in ("127.0.0.1", "::1", "localhost"):
        openrlhf.check_host(host, None)
    openrlhf.check_host("0.0.0.0", "s3cret")
