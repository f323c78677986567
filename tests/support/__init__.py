"""Builders and helpers shared by every test level and by bench/ (no fixtures:
those live in the conftest.py of the level that uses them)."""
