"""Hardening: the bad-input corpus, property-based loader tests, atomic writes, determinism."""
