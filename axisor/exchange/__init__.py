"""Exchanges: the protocol the platform uses, LN Markets' math, and the paper venue."""
