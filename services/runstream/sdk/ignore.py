"""``.gitignore``-style rules for the source snapshot. Pure.

Supported: comments, blank lines, ``!`` negation (the last matching rule wins),
a trailing ``/`` for directories only, a leading or inner ``/`` anchoring the
pattern at the snapshot root, ``*``, ``?``, ``[...]`` and ``**``. Only the ignore
files at the snapshot root are read (not nested ones).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

DEFAULT_RULES = (
    ".git/",
    ".hg/",
    ".svn/",
    "__pycache__/",
    "*.py[cod]",
    ".venv/",
    "venv/",
    "node_modules/",
    ".runstream/",
    ".ipynb_checkpoints/",
    ".mypy_cache/",
    ".pytest_cache/",
    ".ruff_cache/",
)


@dataclass(frozen=True)
class Rule:
    regex: re.Pattern[str]
    negate: bool
    dir_only: bool


def _glob_to_regex(glob: str) -> str:
    out = []
    i = 0
    while i < len(glob):
        c = glob[i]
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if glob.startswith("/**", i) and i + 3 == len(glob):
            out.append("/.*")
            i += 3
            continue
        if glob.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = glob.find("]", i + 1)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = glob[i + 1 : end].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = end
        elif c == "\\" and i + 1 < len(glob):
            out.append(re.escape(glob[i + 1]))
            i += 1
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def parse_rule(line: str) -> Rule | None:
    text = line.rstrip("\n").rstrip()
    if not text or text.startswith("#"):
        return None
    negate = text.startswith("!")
    if negate:
        text = text[1:]
    dir_only = text.endswith("/")
    text = text.rstrip("/")
    if not text:
        return None
    anchored = "/" in text
    text = text.lstrip("/")
    body = _glob_to_regex(text)
    prefix = "^" if anchored else "^(?:.*/)?"
    return Rule(re.compile(prefix + body + r"\Z"), negate, dir_only)


class IgnoreRules:
    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = list(rules)

    @classmethod
    def from_lines(cls, lines: Iterable[str]) -> IgnoreRules:
        return cls(r for r in (parse_rule(line) for line in lines) if r is not None)

    @classmethod
    def for_folder(cls, root: Path) -> IgnoreRules:
        lines: list[str] = list(DEFAULT_RULES)
        for name in (".gitignore", ".runstreamignore"):
            path = root / name
            if path.is_file():
                lines += path.read_text("utf-8", errors="replace").splitlines()
        return cls.from_lines(lines)

    def ignored(self, relative: str, is_dir: bool) -> bool:
        """Whether the path (relative to the root, ``/``-separated) is ignored."""
        result = False
        for rule in self.rules:
            if rule.dir_only and not is_dir:
                continue
            if rule.regex.match(relative):
                result = not rule.negate
        return result
