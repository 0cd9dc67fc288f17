"""The YAML side of config.yaml: one walk that refuses duplicate keys and aliases and finds the
line of every key path, and validation errors that name the file, the line and the key."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import yaml

from .errors import ConfigError

if TYPE_CHECKING:
    from pydantic import ValidationError


def key_lines(node: Any, source: str) -> dict[tuple, int]:
    """The 1-based line of every key path in the document (a list item's path ends in its index),
    found by a walk that also refuses duplicate keys and aliases:

    PyYAML keeps the last of two equal keys without a word: a second ``trials:`` would
    silently drop the first list of watched trials. A key given twice is refused instead.

    YAML aliases (``*name``, and so ``<<: *name`` merges) are refused too: a node reached twice
    is an alias. A few nested aliases expand to billions of nodes (an "alias bomb"), which
    validation would walk; a configuration has no need of them. Composing the node tree shares
    an aliased node rather than copying it, so this walk is linear in the file's size."""
    lines: dict[tuple, int] = {}
    if node is None:
        return lines
    seen_nodes: set[int] = set()
    # (node, its key path, the line it is used on, whether it is a value: a key node has no path)
    stack: list[tuple[Any, tuple, int, bool]] = [(node, (), node.start_mark.line + 1, True)]
    while stack:
        n, path, used_on, is_value = stack.pop()
        if id(n) in seen_nodes:
            raise ConfigError(f"{source}:{used_on}: YAML aliases (*name) are not allowed; the value "
                              f"anchored on line {n.start_mark.line + 1} is used again here",
                              hint="Write the value out where it is needed.")
        seen_nodes.add(id(n))
        if is_value:
            lines[path] = used_on
        children: list[tuple[Any, tuple, int, bool]] = []
        if isinstance(n, yaml.MappingNode):
            first: dict[Any, int] = {}
            for k, v in n.value:
                line = k.start_mark.line + 1
                if isinstance(k, yaml.ScalarNode) and k.tag != "tag:yaml.org,2002:merge":
                    if k.value in first:
                        key = ".".join(str(p) for p in path + (k.value,))
                        raise ConfigError(f"{source}:{line}: key {key!r} is given twice "
                                          f"(first on line {first[k.value]}); only one may stay")
                    first[k.value] = line
                else:
                    children.append((k, path, line, False))
                children.append((v, path + (k.value if isinstance(k, yaml.ScalarNode) else "?",), line, True))
        elif isinstance(n, yaml.SequenceNode):
            # An alias item keeps its anchor's mark (earlier in the file): name the list's line.
            children = [(v, path + (i,), max(v.start_mark.line, n.start_mark.line) + 1, True)
                        for i, v in enumerate(n.value)]
        # Reversed onto the stack: visited in document order, so the anchor comes before its alias.
        stack.extend(reversed(children))
    return lines


def describe(e: "ValidationError", source: str, lines: dict[tuple, int], *,
             secret_keys: dict[str, str]) -> str:
    """Pydantic's errors as lines that name the file, the line and the key."""
    msgs = []
    for err in e.errors():
        loc = tuple("from" if p == "from_" else p for p in err["loc"])
        line = None
        probe = loc
        while probe and line is None:
            line = lines.get(probe)
            probe = probe[:-1]
        key = ".".join(str(p) for p in loc) or "(top level)"
        where = f"{source}:{line}" if line else source
        if err["type"] == "extra_forbidden":
            env = secret_keys.get(str(loc[-1]))
            if env:
                msgs.append(f"{where}: {key}: secrets are not read from the file; set {env} in the environment")
            else:
                msgs.append(f"{where}: unknown key {key!r}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            msgs.append(f"{where}: {key}: {msg}")
    return "invalid configuration:\n  " + "\n  ".join(msgs)
