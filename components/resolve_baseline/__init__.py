"""resolve_baseline component."""
