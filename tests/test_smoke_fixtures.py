from fgalign.data.tokenize import encode_pair
from fgalign.models.policy import load_causal_lm, load_tokenizer


def test_tiny_policy_roundtrip(tiny_policy_dir):
    tok = load_tokenizer(tiny_policy_dir)
    model = load_causal_lm(tiny_policy_dir)
    p, r = encode_pair(tok, "List 3 fruits:", " apple, banana.")
    assert r[-1] == tok.eos_token_id and tok.pad_token_id != tok.eos_token_id
    assert tok.decode(p + r[:-1]) == "List 3 fruits: apple, banana."
    out = model(__import__("torch").tensor([p + r]))
    assert out.logits.shape == (1, len(p) + len(r), len(tok))
