"""run_report component."""
