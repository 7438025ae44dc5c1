"""Reusable KFP components of ctloop, one folder each."""
