"""validate_data component."""
