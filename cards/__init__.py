"""Adaptive Card builders: approval, decision, digest. Pure: builds JSON, sends nothing."""
