"""Data: reading tables and spans from a local path, gs:// or s3://, and the built-in generator."""
