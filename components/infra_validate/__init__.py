"""infra_validate component."""
