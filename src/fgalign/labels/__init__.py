"""Token labels from minimal edits: alignment and character-offset projection."""
