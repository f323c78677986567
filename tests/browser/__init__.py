"""The pages in a real browser (tests/browser/conftest.py)."""
