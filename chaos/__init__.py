"""Chaos scenarios: failures injected into a running stack, and what they must not cost."""
