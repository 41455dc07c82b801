"""Tests of the sandbox simulators (riposte.sandbox), over real HTTP on loopback."""
