"""Preference pairs sampled from a policy: two responses per prompt, the task's judge picks (`fgalign sample`)."""
