"""Shared test set-up: offline hub, few threads, and a tiny tokenizer/model built from scratch."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)

CORPUS = [
    "List 3 fruits: apple, banana, cherry.",
    "List 4 animals: cat, dog, horse, cow.",
    "List 2 colors: red, blue.",
    "The movie was great and the actors were wonderful.",
    "I hated the boring plot, but the music was nice.",
] * 20


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory):
    from fgalign.tasks.tokenizer import train_bpe_tokenizer

    return train_bpe_tokenizer(CORPUS, tmp_path_factory.mktemp("tok"), vocab_size=300)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_tokenizer_dir):
    from fgalign.models.policy import load_tokenizer

    return load_tokenizer(tiny_tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_policy_dir(tiny_tokenizer, tmp_path_factory):
    """A randomly initialised 2-layer GPT-2 saved with save_pretrained, plus its tokenizer."""
    from fgalign.models.policy import TinyModelConfig, build_tiny_causal_lm

    torch.manual_seed(0)
    model = build_tiny_causal_lm(TinyModelConfig(n_layer=2, d_model=64, n_head=2, max_len=96), tiny_tokenizer)
    out = tmp_path_factory.mktemp("policy")
    model.save_pretrained(out)
    tiny_tokenizer.save_pretrained(out)
    return out
