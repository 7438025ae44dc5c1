"""promote component."""
