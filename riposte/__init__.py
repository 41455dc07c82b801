"""Riposte: automated responses to Microsoft Defender alerts, as Prefect flows."""

__version__ = "0.1.0"
