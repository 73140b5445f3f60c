#!/usr/bin/env python3
"""The values table of charts/tern/README.md, made from the comments of charts/tern/values.yaml.

    python3 charts/tern/ci/values_table.py          # rewrites the table in the README
    python3 charts/tern/ci/values_table.py --check  # exits 1 when the README's table is stale

A key's description is the block of comment lines right above it (no blank line between) and
the comment at the end of its line. Every key is a row, maps included when they have a comment;
the default is the value values.yaml gives (PyYAML reads it), as YAML flow. The table sits
between the two marker lines below; everything else in the README is left alone. Keys inside
lists (e.g. the items of a list of maps) are part of their list's default, not rows.
"""

from __future__ import annotations

import os
import re
import sys

import yaml

CHART = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
VALUES = os.path.join(CHART, "values.yaml")
README = os.path.join(CHART, "README.md")
START = "<!-- values-table:start (made by ci/values_table.py from values.yaml; do not edit) -->"
END = "<!-- values-table:end -->"

KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.\-/\"']+):(?P<rest>.*)$")


def split_comment(rest: str) -> tuple[str, str]:
    """A line's value and its end-of-line comment ("# ..." outside quotes)."""
    quote = None
    for i, ch in enumerate(rest):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "#" and (i == 0 or rest[i - 1] in " \t"):
            return rest[:i].strip(), rest[i + 1:].strip()
    return rest.strip(), ""


def rows(lines: list[str], values: dict) -> list[tuple[str, str, str]]:
    out = []
    stack: list[tuple[int, str]] = []  # (indent, key) of the maps the current line is in
    comment: list[str] = []
    skip_deeper_than: int | None = None  # inside a block list: its items are its default
    for line in lines:
        stripped = line.strip()
        if not stripped:
            comment = []
            continue
        indent = len(line) - len(line.lstrip(" "))
        if skip_deeper_than is not None:
            if indent > skip_deeper_than or (indent == skip_deeper_than and stripped.startswith("- ")):
                continue
            skip_deeper_than = None
        if stripped.startswith("#"):
            comment.append(stripped.lstrip("#").strip())
            continue
        m = KEY.match(line)
        if not m:
            comment = []
            continue
        key = m["key"].strip("\"'")
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = [k for _, k in stack] + [key]
        value, eol = split_comment(m["rest"])
        desc = " ".join(comment + ([eol] if eol else []))
        comment = []
        node = values
        for k in path:
            node = node.get(k) if isinstance(node, dict) else None
        if value == "":
            if isinstance(node, dict) and node:
                stack.append((indent, key))
                if desc:
                    out.append((".".join(path), "", desc))
                continue
            if isinstance(node, list):
                skip_deeper_than = indent
        out.append((".".join(path), default(node), desc))
    return out


def default(node) -> str:
    if node is None:
        return "null"
    text = yaml.safe_dump(node, default_flow_style=True, width=10_000, sort_keys=False).strip()
    if text.endswith("\n..."):
        text = text[:-4].strip()
    return text.removesuffix("...").strip()


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table() -> str:
    with open(VALUES) as f:
        text = f.read()
    values = yaml.safe_load(text)
    lines = ["| Key | Default | Description |", "| --- | --- | --- |"]
    for path, value, desc in rows(text.splitlines(), values):
        shown = f"`{cell(value)}`" if value else ""
        text = " ".join(desc.split()).replace("<", "&lt;").replace(">", "&gt;")
        lines.append(f"| `{path}` | {shown} | {cell(text)} |")
    return "\n".join(lines)


def main() -> int:
    with open(README) as f:
        readme = f.read()
    if START not in readme or END not in readme:
        print(f"{README} has no values table markers ({START} ... {END})")
        return 1
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n{table()}\n{END}{tail}"
    if "--check" in sys.argv:
        if new != readme:
            print("charts/tern/README.md's values table is stale: run python3 charts/tern/ci/values_table.py")
            return 1
        print("charts/tern/README.md's values table is up to date")
        return 0
    if new != readme:
        with open(README, "w") as f:
            f.write(new)
        print(f"wrote the values table of {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
