"""train_job component."""
