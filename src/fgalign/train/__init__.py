"""Training stages: SFT and reward models (HF Trainer)."""
