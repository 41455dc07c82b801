"""Plain text to Atlassian Document Format, the rich-text shape Jira Cloud REST v3 requires.

Only links to the Defender portals become link marks: the rest of the text (an alert's
description, a command line, an approver's reason) may hold an attacker's URL, which stays text.
"""

from __future__ import annotations

import re
from typing import Any

from riposte.alerts.model import safe_portal_url

_URL = re.compile(r"https?://[^\s<>\"')]+")


def _inline(line: str) -> list[dict[str, Any]]:
    nodes: list[dict[str, Any]] = []
    pos = 0
    for match in _URL.finditer(line):
        url = match.group(0)
        if safe_portal_url(url) is None:
            continue  # stays in the text around it, unlinked
        if match.start() > pos:
            nodes.append({"type": "text", "text": line[pos : match.start()]})
        nodes.append(
            {"type": "text", "text": url, "marks": [{"type": "link", "attrs": {"href": url}}]}
        )
        pos = match.end()
    if pos < len(line):
        nodes.append({"type": "text", "text": line[pos:]})
    return nodes


def _paragraph(lines: list[str]) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    for i, line in enumerate(lines):
        if i:
            content.append({"type": "hardBreak"})
        content.extend(_inline(line))
    return {"type": "paragraph", "content": content}


def to_adf(text: str) -> dict[str, Any]:
    """Blank lines separate paragraphs, ``- `` lines make bullet lists, URLs become links."""
    blocks: list[dict[str, Any]] = []
    for chunk in re.split(r"\n\s*\n", text.strip()):
        lines = [line.rstrip() for line in chunk.splitlines() if line.strip()]
        if not lines:
            continue
        if all(line.lstrip().startswith("- ") for line in lines):
            items = [
                {"type": "listItem", "content": [_paragraph([line.lstrip()[2:]])]} for line in lines
            ]
            blocks.append({"type": "bulletList", "content": items})
        else:
            blocks.append(_paragraph(lines))
    if not blocks:
        blocks.append({"type": "paragraph", "content": []})
    return {"type": "doc", "version": 1, "content": blocks}
