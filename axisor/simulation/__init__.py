"""Replays of real BTC price episodes through the whole pipeline, with generated positions."""
