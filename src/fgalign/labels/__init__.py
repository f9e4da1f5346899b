"""Token labels from minimal edits: alignment and character-offset projection."""
from typing import Literal

LabelMode = Literal["tokens", "chars"]
# The one default of `fgalign label`, `train-rm` and `annotate init` (and so of the chips the annotation page
# shows): "chars" marks a replaced word whole and works for any fast tokenizer, which is how every shipped config
# trains rm-token; "tokens" (the paper's id alignment) can split a word into a kept and a replaced half.
DEFAULT_LABEL_MODE: LabelMode = "chars"
