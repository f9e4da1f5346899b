"""fgalign: fine-grained RLHF from minimal edits."""
import os

__version__ = "0.1.0"

# Offline by default: a model name that is not a local folder must not turn into minutes of connection
# attempts to the Hugging Face hub. Set before transformers/huggingface_hub are imported (they read it once);
# an explicit HF_HUB_OFFLINE=0, or `fgalign --allow-hub COMMAND ...`, lets the hub in.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
