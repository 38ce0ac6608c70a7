"""Margin Guard: when to act on a position, and how much margin to add."""
