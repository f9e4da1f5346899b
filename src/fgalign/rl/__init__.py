"""PPO: rollouts, the (B, T) reward tensor, losses and GAE, the trainer."""
