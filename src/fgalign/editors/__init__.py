"""Editors: who makes the minimal edits (task oracle, OpenAI-compatible LLM, local HF model)."""
