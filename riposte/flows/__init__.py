"""Playbooks and scheduled flows: composition of tasks only, no HTTP of their own."""
