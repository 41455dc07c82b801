"""How flows run: the intake service, served deployments, the local stack and the `riposte` CLI."""
