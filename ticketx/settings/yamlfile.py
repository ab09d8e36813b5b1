"""YAML with line numbers: every key and list item's line, for `file:line: key.path: message` errors.

Study files come from anyone (shared, reviewed in pull requests, validated in CI), so parsing is
bounded in size, depth and alias expansion before anything is built from them: a 400-byte file
of nested aliases otherwise expands to 43 million values (6.7 GB, then MemoryError), and 20,000
nested brackets to a RecursionError.
"""

from __future__ import annotations

from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from ticketx.errors import UsageError
from ticketx.settings.base import env_limit, error_message, shorten_text

Path_ = tuple[Any, ...]

# A study file is a page or two of YAML (the largest shipped one is 4 KB); a million bytes is
# far more than any grid needs, and bounds the time and memory of everything that follows.
MAX_BYTES = 1 << 20  # bytes; TICKETX_MAX_STUDY_BYTES overrides it
MAX_BYTES_ENV = "TICKETX_MAX_STUDY_BYTES"
MAX_DEPTH = 32  # nesting levels (a study has about 5: expect -> item -> targets -> item)
# Values that aliases may add to the file (each `*name` counts the values of what it names,
# aliases inside included): enough to share a training block or a seed list many times over.
MAX_ALIASED = 100_000


def max_bytes() -> int:
    """The largest study file read, in bytes (TICKETX_MAX_STUDY_BYTES, default 1 MiB)."""
    return env_limit(MAX_BYTES_ENV, MAX_BYTES)


def too_large(file: str, size: int, limit: int) -> UsageError:
    return UsageError(f"{file}: {size:,} bytes is more than a study file may have ({limit:,} bytes)",
                      f"split the study, or raise the limit: {MAX_BYTES_ENV}={size}")


def _loader(text: str, file: str) -> Any:
    """A safe YAML loader that refuses deep nesting and alias expansion past MAX_ALIASED, at compose time
    (aliases share one node there: nothing is expanded before it is counted)."""
    import yaml

    class Bounded(yaml.SafeLoader):
        def __init__(self, stream: str) -> None:
            super().__init__(stream)
            self.depth = 0
            self.aliased = 0  # values added by aliases so far
            self.composed = 0  # values of the document so far, each alias counted as what it names
            self.sizes: dict[int, int] = {}  # anchored node (id) -> its values, aliases inside included

        def compose_node(self, parent: Any, index: Any) -> Any:
            event = self.peek_event()
            line = event.start_mark.line + 1
            if isinstance(event, yaml.AliasEvent):
                target = self.anchors.get(event.anchor)
                if target is not None:
                    size = self.sizes.get(id(target))
                    if size is None:
                        raise UsageError(f"{file}:{line}: *{event.anchor}: an alias inside the value it names (a cycle)")
                    self.aliased += size
                    self.composed += size
                    if self.aliased > MAX_ALIASED:
                        raise UsageError(
                            f"{file}:{line}: *{event.anchor}: aliases expand this file to more than {MAX_ALIASED:,} values "
                            f"(*{event.anchor} alone is {size:,})", "write the values out instead of repeating aliases")
                return super().compose_node(parent, index)
            if self.depth >= MAX_DEPTH:
                raise UsageError(f"{file}:{line}: nested more than {MAX_DEPTH} levels deep; a study file needs a handful")
            self.depth += 1
            before = self.composed
            self.composed += 1
            try:
                node = super().compose_node(parent, index)
            finally:
                self.depth -= 1
            if getattr(event, "anchor", None) is not None:
                self.sizes[id(node)] = self.composed - before
            return node

    return Bounded(text)


def compose(text: str, file: str) -> tuple[Any, dict[Path_, int]]:
    """Parse YAML and record the line of every key and list item (1-based), by key path.

    Bounded: at most `max_bytes()` of text, MAX_DEPTH levels and MAX_ALIASED values from
    aliases; past any of them, one UsageError naming the file and line (and the alias).
    """
    import yaml

    limit = max_bytes()
    if len(text) > limit or len(text.encode()) > limit:
        raise too_large(file, len(text.encode()), limit)
    loader = _loader(text, file)
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
        raise UsageError(shorten_text(f"{file}:{line}: invalid YAML: {problem}"), hint) from None
    except yaml.YAMLError as err:
        raise UsageError(shorten_text(f"{file}: invalid YAML: {err}")) from None
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
                    raise UsageError(shorten_text(f"{file}:{k.start_mark.line + 1}: {format_path(path + (key,))}: duplicate key"))
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
        return where(loc, shorten_text(msg))
    return UsageError(shorten_text(f"{file}:{line_of(lines, loc)}: {format_path(loc)}: {msg}"))
