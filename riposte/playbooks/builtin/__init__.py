"""The built-in playbooks, one file each, written on the public API like any user's playbook."""

from riposte.playbooks.builtin.close_benign import close_benign
from riposte.playbooks.builtin.digest import digest
from riposte.playbooks.builtin.escalate import escalate
from riposte.playbooks.builtin.ignore import ignore
from riposte.playbooks.builtin.ticket_and_notify import ticket_and_notify

BUILTINS = (ticket_and_notify, escalate, close_benign, digest, ignore)

__all__ = ["BUILTINS", "close_benign", "digest", "escalate", "ignore", "ticket_and_notify"]
