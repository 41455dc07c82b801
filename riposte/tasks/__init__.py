"""Reusable Prefect tasks: thin over the block clients, with retries and persisted results.

Results persist, so a retried flow run gets completed steps back as Cached instead of running
them again; every write is also find-or-create in the external system, for crashes that happen
between the call and the commit of its result.
"""
