"""load_baseline component."""
