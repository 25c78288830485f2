"""Write YAML the way Talos (Go yaml.v3, 4-space indent) lays it out.

Generated configs must look like real ones, because the collection edits them in place
with a round-trip YAML library: sequences are indented under their key, PEM strings are
literal blocks, empty collections are `[]`/`{}`, and strings are quoted only when plain
style would change their type.
"""

from __future__ import annotations

import json

import yaml

_INDICATORS = set("-?:,[]{}#&*!|>'\"%@`")


def _plain_ok(text: str) -> bool:
    if not text or text != text.strip() or "\n" in text:
        return False
    if text[0] in _INDICATORS or ": " in text or " #" in text or text.endswith(":"):
        return False
    try:
        # Plain style is fine only when a YAML reader gets the same string back.
        return yaml.safe_load(text) == text
    except yaml.YAMLError:
        return False


def _scalar(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if _plain_ok(value):
        return value
    return json.dumps(value)  # a JSON string is a valid YAML double-quoted scalar


def _block(text: str, indent: int) -> list[str]:
    indicator = "|" if text.endswith("\n") else "|-"
    lines = [indicator]
    lines += [(" " * indent + line) if line else "" for line in text.rstrip("\n").split("\n")]
    return lines


def _is_block(value) -> bool:
    return isinstance(value, str) and "\n" in value


def _mapping(data: dict, key_indent: int, child_indent: int) -> list[str]:
    out = []
    pad = " " * key_indent
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.append("%s%s:" % (pad, key))
            out += _mapping(value, child_indent, child_indent + 4)
        elif isinstance(value, list) and value:
            out.append("%s%s:" % (pad, key))
            out += _sequence(value, child_indent)
        elif isinstance(value, dict):
            out.append("%s%s: {}" % (pad, key))
        elif isinstance(value, list):
            out.append("%s%s: []" % (pad, key))
        elif _is_block(value):
            head, *body = _block(value, child_indent)
            out.append("%s%s: %s" % (pad, key, head))
            out += body
        else:
            out.append("%s%s: %s" % (pad, key, _scalar(value)))
    return out


def _sequence(items: list, indent: int) -> list[str]:
    out = []
    pad = " " * indent
    for item in items:
        if isinstance(item, dict) and item:
            # First key shares the "- " line; the others align after it (yaml.v3 compact style).
            lines = _mapping(item, indent + 2, indent + 4)
            out.append(pad + "- " + lines[0].lstrip())
            out += lines[1:]
        elif _is_block(item):
            head, *body = _block(item, indent + 2)
            out.append(pad + "- " + head)
            out += body
        else:
            out.append(pad + "- " + _scalar(item))
    return out


def dump(document: dict) -> str:
    """One YAML document (no `---`), newline-terminated."""
    return "\n".join(_mapping(document, 0, 4)) + "\n"


def dump_all(documents: list[dict]) -> str:
    """Several documents joined with `---`, as Talos writes multi-document configs."""
    return "---\n".join(dump(document) for document in documents)
