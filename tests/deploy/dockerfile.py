"""A small Dockerfile reader for the static deploy checks: stages, instructions, `.dockerignore`.

It understands what this repository's Dockerfile uses (line continuations, comments, exec and
shell forms, `ARG` defaults in `FROM`, `--from`/`--chown` flags); anything else is kept verbatim.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Instruction:
    """One instruction: `keyword` upper-case, `flags` like {"from": "builder"}, `args` the rest."""

    keyword: str
    flags: dict[str, str]
    args: str
    line: int

    def words(self) -> list[str]:
        """The arguments as a list: the JSON array of the exec form, else shell-split words."""
        text = self.args.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError:
                pass
            else:
                if isinstance(parsed, list):
                    return [str(word) for word in parsed]
        return shlex.split(text, posix=True)


@dataclass
class Stage:
    """A build stage: its base image (ARG defaults substituted), name and instructions."""

    base: str
    name: str | None
    index: int
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [ins for ins in self.instructions if ins.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None

    def env(self) -> dict[str, str]:
        """Variables set by this stage's ENV instructions (`KEY=value` form)."""
        values: dict[str, str] = {}
        for ins in self.all("ENV"):
            for word in shlex.split(ins.args, posix=True):
                if "=" in word:
                    key, value = word.split("=", 1)
                    values[key] = value
        return values


_FLAG = re.compile(r"^--([a-z-]+)=(\S+)\s*")


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Join continuation lines; drop comments and blank lines. Returns (first line no., text)."""
    lines: list[tuple[int, str]] = []
    buffer: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction are skipped by Docker too
        if not buffer:
            start = number
        if raw.rstrip().endswith("\\"):
            buffer.append(raw.rstrip()[:-1])
            continue
        buffer.append(raw)
        lines.append((start, " ".join(part.strip() for part in buffer)))
        buffer = []
    if buffer:
        lines.append((start, " ".join(part.strip() for part in buffer)))
    return lines


def parse_dockerfile(path: Path) -> list[Stage]:
    """The stages of the Dockerfile at `path`, in order."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, line in _logical_lines(path.read_text()):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        flags: dict[str, str] = {}
        rest = rest.strip()
        while (match := _FLAG.match(rest)) is not None:
            flags[match.group(1)] = match.group(2)
            rest = rest[match.end() :]
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            global_args[name.strip()] = default.strip().strip('"')
            continue
        if keyword == "FROM":
            words = rest.split()
            base = re.sub(
                r"\$\{?(\w+)\}?", lambda m: global_args.get(m.group(1), m.group(0)), words[0]
            )
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=base, name=name, index=len(stages)))
            continue
        if not stages:
            continue  # parser directives and comments before the first FROM
        stages[-1].instructions.append(Instruction(keyword, flags, rest, number))
    return stages


def stage_named(stages: list[Stage], name: str) -> Stage | None:
    for stage in stages:
        if stage.name == name:
            return stage
    return None


def read_dockerignore(path: Path) -> list[str]:
    """The patterns of a `.dockerignore` (comments and blank lines dropped)."""
    if not path.is_file():
        return []
    patterns = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            patterns.append(line)
    return patterns


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A `.dockerignore` pattern as a regex: `*` and `?` stay within a folder, `**` spans them."""
    regex = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex, i = regex + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            regex, i = regex + ".*", i + 2
        elif pattern[i] == "*":
            regex, i = regex + "[^/]*", i + 1
        elif pattern[i] == "?":
            regex, i = regex + "[^/]", i + 1
        elif pattern[i] == "[" and "]" in pattern[i:]:
            close = pattern.index("]", i)
            regex, i = regex + pattern[i : close + 1], close + 1
        else:
            regex, i = regex + re.escape(pattern[i]), i + 1
    return re.compile(f"^{regex}$")


def _pattern_matches(pattern: str, relative: str) -> bool:
    """Docker's rule: a pattern matches a path or any of its parent folders."""
    compiled = _pattern_regex(pattern.strip("/"))
    parts = relative.strip("/").split("/")
    return any(compiled.match("/".join(parts[: n + 1])) for n in range(len(parts)))


def is_ignored(relative: str, patterns: list[str]) -> bool:
    """Whether the build context leaves out `relative` (a path relative to the context root)."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        if _pattern_matches(pattern[1:] if negate else pattern, relative):
            ignored = not negate
    return ignored
