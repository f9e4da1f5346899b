"""fgalign: fine-grained RLHF from minimal edits."""
__version__ = "0.1.0"
