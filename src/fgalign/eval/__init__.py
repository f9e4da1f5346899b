"""Evaluation: judges, win rate, reward-model accuracy."""
