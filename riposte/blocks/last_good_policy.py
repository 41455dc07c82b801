"""The last good policy, kept in a Prefect block so that every worker falls back to the same one.

A block rather than a Variable: Variables hold at most 5000 characters, less than a commented
policy file. The block holds no secret; it is here so that the policy survives a restart and a
broken edit on any machine.
"""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field

LAST_GOOD_POLICY_BLOCK = "riposte-last-good-policy"


class LastGoodPolicy(Block):
    """The text of the last policy that validated, and where it came from.

    Example:
        ```python
        record = LastGoodPolicy.load("riposte-last-good-policy")
        policy = parse_policy(record.text, record.origin)
        ```
    """

    _block_type_name = "Riposte Last Good Policy"
    _block_type_slug = "riposte-last-good-policy"
    _logo_url = None
    _description = "The last valid Riposte policy, used while the policy file is broken."

    text: str = Field(description="The policy file's text.")
    origin: str = Field(description="The file it was read from.")
    sha256: str = Field(description="SHA-256 of the text.")
    saved_at: str = Field(description="When it was saved (ISO 8601, UTC).")
