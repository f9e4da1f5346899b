"""Reward models (token-level and sequence-level), value model, loading/saving."""
