"""The YAML side of config.yaml: one walk that refuses duplicate keys and aliases, the line of
every key path, and validation errors that name the file, the line and the key."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import yaml

from .errors import ConfigError

if TYPE_CHECKING:
    from pydantic import ValidationError


def refuse_duplicate_keys_and_aliases(node: Any, source: str) -> None:
    """PyYAML keeps the last of two equal keys without a word: a second ``trials:`` would
    silently drop the first list of watched trials. A key given twice is refused instead.

    The same walk refuses YAML aliases (``*name``, and so ``<<: *name`` merges): a node reached
    twice is an alias. A few nested aliases expand to billions of nodes (an "alias bomb"), which
    validation would walk; a configuration has no need of them. Composing the node tree shares
    an aliased node rather than copying it, so this check is linear in the file's size."""
    seen_nodes: set[int] = set()
    stack: list[tuple[Any, tuple, int]] = [(node, (), 1)]
    while stack:
        n, path, used_on = stack.pop()
        if n is None:
            continue
        if id(n) in seen_nodes:
            raise ConfigError(f"{source}:{used_on}: YAML aliases (*name) are not allowed; the value "
                              f"anchored on line {n.start_mark.line + 1} is used again here",
                              hint="Write the value out where it is needed.")
        seen_nodes.add(id(n))
        children: list[tuple[Any, tuple, int]] = []
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
                    children.append((k, path, line))
                children.append((v, path + (k.value if isinstance(k, yaml.ScalarNode) else "?",), line))
        elif isinstance(n, yaml.SequenceNode):
            # An alias item keeps its anchor's mark (earlier in the file): name the list's line.
            children = [(v, path + (i,), max(v.start_mark.line, n.start_mark.line) + 1)
                        for i, v in enumerate(n.value)]
        # Reversed onto the stack: visited in document order, so the anchor comes before its alias.
        stack.extend(reversed(children))


def line_index(node: Any, path: tuple = ()) -> dict[tuple, int]:
    """Map every key path in the YAML document to its 1-based line number."""
    out: dict[tuple, int] = {}
    if node is None:
        return out
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value
            out[path + (key,)] = k.start_mark.line + 1
            out.update({p: ln for p, ln in line_index(v, path + (key,)).items() if p != path + (key,)})
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            out.update(line_index(v, path + (i,)))
    return out


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
