"""rollout component."""
