"""notify_failure component."""
