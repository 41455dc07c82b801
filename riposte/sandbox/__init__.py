"""Simulators of the external APIs Riposte talks to, served over real HTTP for tests and staging."""
