"""A small byte-level BPE trained offline on a task's text, saved as a standard HF tokenizer directory."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

EOS, PAD, BOS = "<|endoftext|>", "<|pad|>", "<|bos|>"


def train_bpe_tokenizer(texts: Iterable[str], out_dir: str | Path, vocab_size: int = 512,
                        chat_template: str | None = None) -> Path:
    """Train a byte-level BPE on `texts` and save it where `AutoTokenizer.from_pretrained` loads it.

    Byte-level means any string round-trips (no unknown tokens) and offsets map back to characters.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS, PAD, BOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD, bos_token=BOS,
                                   padding_side="left", model_max_length=1024)
    if chat_template:
        fast.chat_template = chat_template
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out))
    return out
