"""Continuous-training pipelines composed from ctloop components."""
