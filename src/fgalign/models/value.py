"""The PPO value model: a causal LM backbone with a scalar head read at every position."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from fgalign.errors import InputError
from fgalign.models.activations import fuse_gelu
from fgalign.models.reward import detect_backbone_kind


class ValueModel(nn.Module):
    """V(x, y_<t): the backbone's hidden state at each position through a linear head.  -> (B, L)"""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.config.hidden_size, 1)
        # Zero head: values start at 0, so the first critic updates do not inject noise into advantages.
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor) -> Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                               use_cache=False).last_hidden_state  # (B, L, H)
        # fp32 into the fp32 head: a backbone kept in bf16/fp16 would otherwise fail on the dtype mismatch.
        return self.head(hidden.float()).squeeze(-1).float()  # (B, L); fp32 under autocast too

    @classmethod
    def from_backbone_dir(cls, path: str | Path, vocab_size: int, dtype: torch.dtype = torch.float32,
                          tokenizer=None) -> "ValueModel":
        """Initialise from the transformer body of a local HF model (policy or reward model), safetensors only.

        The value model reads the policy's token ids left to right, so the backbone must be causal (an encoder
        would let later tokens change V at earlier positions) and, when `tokenizer` (the policy's) is given,
        its tokenizer must be the policy's: the same ids must mean the same tokens.
        The backbone loads in fp32 (it is trained) whatever dtype it was saved in.
        """
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        if not (Path(path) / "config.json").exists():
            raise InputError("no config.json: cannot initialise the value model from here", path=str(path))
        hint = "; initialise the value model from the policy (--value-init policy)"
        if detect_backbone_kind(AutoConfig.from_pretrained(str(path))) != "causal":
            raise InputError("the backbone is a bidirectional encoder: V at a token would see the tokens after "
                             f"it{hint}", path=str(path))
        if tokenizer is not None:
            theirs = AutoTokenizer.from_pretrained(str(path)).get_vocab()
            if theirs != tokenizer.get_vocab():
                raise InputError(f"its tokenizer differs from the policy's ({len(theirs)} vs {len(tokenizer)} "
                                 f"tokens, or the same count with other ids){hint}", path=str(path))
        backbone = AutoModel.from_pretrained(str(path), use_safetensors=True, dtype=dtype)
        embeddings = backbone.get_input_embeddings().num_embeddings
        if embeddings < vocab_size:
            raise InputError(f"the value model's backbone has {embeddings} token embeddings but the policy's "
                             f"tokenizer has {vocab_size} tokens{hint}", path=str(path))
        return cls(fuse_gelu(backbone))
