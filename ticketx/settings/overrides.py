"""Command-line overrides of a study file: `--set train.lr=0.01 --set transfer.seeds=[0,1]`.

Each override sets one key path of the parsed YAML before validation, so the value goes
through the same schema and checks as the file's own; its value is read as YAML (`0.01`, `adam`,
`[0, 1]`, `{rounds: 2}`). An error at (or under) an overridden key names the override
(`--set train.lr: ...`) instead of a line of the file. Overrides of keys that change no result
(NOT_SCIENCE: claims, launcher, device, ...) do not make another study; the others are part of
what the study folder records (study.json) and must be given again to continue it.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any, Sequence

from ticketx.errors import UsageError

Path_ = tuple[Any, ...]

# Top-level keys whose values change no cell's result (settings.study.StudySpec says why for each).
NOT_SCIENCE = ("name", "description", "device", "cpu_threads", "data_dir", "launcher", "expect", "tracking", "cohort")

_KEY = re.compile(r"[A-Za-z_][\w-]*(?:\.[A-Za-z_][\w-]*|\[\d+\])*")


@dataclass(frozen=True)
class Override:
    """One `--set KEY=VALUE`: the text as given, the key path and the value read as YAML."""

    text: str
    path: Path_
    value: Any

    @property
    def key(self) -> str:
        return self.text.split("=", 1)[0].strip()

    @property
    def name(self) -> str:
        """How errors name it: '--set train.lr'."""
        return f"--set {self.key}"

    @property
    def science(self) -> bool:
        """Whether it can change a result (and so makes another study)."""
        return self.path[0] not in NOT_SCIENCE


def parse_path(key: str) -> Path_:
    """'train.lr' -> ('train', 'lr'); 'expect[1].by' -> ('expect', 1, 'by')."""
    if not _KEY.fullmatch(key):
        raise UsageError(f"--set {key}: expected a key path such as train.lr, transfer.seeds or expect[0].by")
    return tuple(int(i) if i else k for k, i in re.findall(r"([A-Za-z_][\w-]*)|\[(\d+)\]", key))


def _loader() -> Any:
    """PyYAML's safe loader, reading 1e-3 as a number (YAML 1.2; PyYAML's 1.1 rules make it a string)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
                                 list("-+0123456789."))
    return Loader


def parse_override(text: str) -> Override:
    """'train.lr=0.01' -> Override(('train', 'lr'), 0.01); the value is read as YAML (flow style)."""
    import yaml

    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UsageError(f"--set {text}: expected KEY=VALUE, such as train.lr=0.01 or transfer.seeds=[0,1]")
    path = parse_path(key)
    try:
        value = yaml.load(raw, Loader=_loader()) if raw.strip() else None  # noqa: S506 - a safe loader
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        hint = "quote a data set with classes inside [...]: ['digits[5-9]']" if "[" in raw else None
        raise UsageError(f"--set {key}: the value {raw!r} is not YAML: {problem}", hint) from None
    return Override(text.strip(), path, value)


def parse_overrides(texts: Sequence[str] | None) -> list[Override]:
    """Each `--set` parsed; a key given twice is an error (which one should win?)."""
    out = [parse_override(t) for t in texts or ()]
    seen: dict[Path_, Override] = {}
    for o in out:
        for p, other in seen.items():
            if p[: len(o.path)] == o.path or o.path[: len(p)] == p:
                raise UsageError(f"{o.name}: also set by {other.name}; give each key once")
        seen[o.path] = o
    return out


def apply(data: Any, overrides: Sequence[Override]) -> Any:
    """A copy of the parsed study file with every override set (mappings made as needed)."""
    data = copy.deepcopy(data) if data is not None else {}
    if not isinstance(data, dict):
        return data  # not a mapping: the file's own error comes first
    for o in overrides:
        node: Any = data
        for i, part in enumerate(o.path):
            last = i == len(o.path) - 1
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in o.path[:i]).lstrip(".")
            if isinstance(part, int):
                if not isinstance(node, list):
                    raise UsageError(f"{o.name}: {where or 'the study'} is not a list")
                if part >= len(node):
                    raise UsageError(f"{o.name}: {where} has {len(node)} items (indices 0-{len(node) - 1})"
                                     if node else f"{o.name}: {where} is an empty list")
            elif not isinstance(node, dict):
                raise UsageError(f"{o.name}: {where} is {type(node).__name__} {node!r}, not a mapping of keys")
            if last:
                node[part] = copy.deepcopy(o.value)
            else:
                if isinstance(part, str) and node.get(part) is None:
                    node[part] = {}
                node = node[part]
    return data


def origin(path: Path_, overrides: Sequence[Override]) -> Override | None:
    """The override that set `path` or a key above it (the deepest such), if any."""
    found = [o for o in overrides if path[: len(o.path)] == o.path]
    return max(found, key=lambda o: len(o.path)) if found else None


def under(path: Path_, overrides: Sequence[Override]) -> list[Override]:
    """The overrides that set a key below `path` (an error about a block they changed)."""
    return [o for o in overrides if len(o.path) > len(path) and o.path[: len(path)] == path]
