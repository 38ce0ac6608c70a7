"""Axisor: Margin Guard and trading automations for LN Markets BTC/USD futures."""

__version__ = "0.1.0"
