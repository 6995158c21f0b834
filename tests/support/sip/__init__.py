"""Helpers for the SIP tests: a UAS harness process, its driver, and a baresip driver."""
