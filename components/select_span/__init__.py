"""select_span component."""
