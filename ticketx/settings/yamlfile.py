"""YAML with line numbers: every key and list item's line, for `file:line: key.path: message` errors."""

from __future__ import annotations

from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from ticketx.errors import UsageError
from ticketx.settings.base import error_message

Path_ = tuple[Any, ...]


def compose(text: str, file: str) -> tuple[Any, dict[Path_, int]]:
    """Parse YAML and record the line of every key and list item (1-based), by key path."""
    import yaml

    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = str(err.problem or err.context)
        # `targets: [digits[5-9]]`: a '[' inside a [...] list ends YAML's plain string.
        hint = "quote a data set with classes inside [...]: ['digits[5-9]'], or write one per line" \
            if "'['" in problem or "']'" in problem else None
        raise UsageError(f"{file}:{line}: invalid YAML: {problem}", hint) from None
    except yaml.YAMLError as err:
        raise UsageError(f"{file}: invalid YAML: {err}") from None
    finally:
        loader.dispose()
    lines: dict[Path_, int] = {}

    def walk(n: Any, path: Path_) -> None:
        lines.setdefault(path, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            seen: set[Any] = set()
            for k, v in n.value:
                key = k.value if isinstance(k, yaml.ScalarNode) else None
                if key in seen:
                    raise UsageError(f"{file}:{k.start_mark.line + 1}: {format_path(path + (key,))}: duplicate key")
                seen.add(key)
                lines[path + (key,)] = k.start_mark.line + 1
                walk(v, path + (key,))
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                walk(item, path + (i,))

    if node is not None:
        walk(node, ())
    return data, lines


def format_path(path: Path_) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def line_of(lines: dict[Path_, int], path: Path_) -> int:
    for n in range(len(path), -1, -1):
        if path[:n] in lines:
            return lines[path[:n]]
    return 1


def _model_at(cls: Any, path: Path_) -> Any:
    """The schema class that holds the keys at `path` (for "did you mean")."""
    for part in path:
        if isinstance(part, int):
            continue
        info = getattr(cls, "model_fields", {}).get(part)
        if info is None:
            return None
        cls = _inner_model(info.annotation)
        if cls is None:
            return None
    return cls


def _inner_model(ann: Any) -> Any:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for a in get_args(ann):
        found = _inner_model(a)
        if found is not None:
            return found
    return None


def schema_error(err: ValidationError, file: str, lines: dict[Path_, int], root: type[BaseModel],
                 where: Any = None) -> UsageError:
    """The error nearest the top of the file, as one line: 'file:line: key.path: message'.

    `where(loc, message)`: the UsageError for an error at `loc` instead (a study with overrides)."""
    import difflib

    errors = sorted(err.errors(), key=lambda e: line_of(lines, tuple(e.get("loc", ()))))
    e = errors[0]
    loc = tuple(e.get("loc", ()))
    kind = e.get("type", "")
    if kind == "extra_forbidden":
        parent = _model_at(root, loc[:-1])
        choices = list(parent.model_fields) if parent is not None else []
        close = difflib.get_close_matches(str(loc[-1]), choices, n=1, cutoff=0.5)
        msg = "unknown key" + (f"; did you mean {close[0]!r}?" if close else f" (expected one of: {', '.join(choices)})")
    else:
        msg = error_message(e, with_input=True)
    if where is not None:
        return where(loc, msg)
    return UsageError(f"{file}:{line_of(lines, loc)}: {format_path(loc)}: {msg}")
