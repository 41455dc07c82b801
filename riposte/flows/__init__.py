"""The Prefect flows: the responses, containment, playbooks run by hand and the scheduled ones
(poll, reconcile, sync, digest), composed of the tasks of `riposte.tasks`."""
