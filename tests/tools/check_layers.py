#!/usr/bin/env python3
"""check_layers.py - no include of runtime/ goes "up" between parts (ctest: lint.layers).

runtime/ is a folder per part, and the parts are layered: a part includes its own headers
and those of the parts below it, never one above, so there is no circle between parts.

    base                      log, metrics, config, secrets, clock, random, ...
    net, parse                both on base only (siblings: neither includes the other)
    directline                base, net, parse
    relay                     base, net, parse, directline
    script                    everything below, relay included
    daemon                    everything

Includes are written from runtime/ (#include "relay/relay.h"), so the first path component
names the part; <handoffd/*.h> (include/handoffd) is the parser's public API and counts as
parse. Usage: check_layers.py [RUNTIME_DIR]; exits 1 and lists every upward include.
"""
import os
import re
import sys

BELOW = {
    "base": set(),
    "net": {"base"},
    "parse": {"base"},
    "directline": {"base", "net", "parse"},
    "relay": {"base", "net", "parse", "directline"},
    "script": {"base", "net", "parse", "directline", "relay"},
    "daemon": {"base", "net", "parse", "directline", "relay", "script"},
}

INCLUDE = re.compile(r'^\s*#\s*include\s+([<"])([^">]+)[">]', re.M)
SOURCES = (".c", ".h", ".cpp")


def included_part(delim, name):
    """The part an include names, or None for a system or library header."""
    if delim == "<":
        return "parse" if name.startswith("handoffd/") else None
    return name.split("/", 1)[0] if "/" in name else ""


def violations(files):
    """FILES maps a path under runtime/ to its text; yields (path, line, message)."""
    for path, text in sorted(files.items()):
        part = path.split("/", 1)[0]
        if part not in BELOW:
            yield path, 0, f"'{part}/' is not a part ({', '.join(BELOW)})"
            continue
        for m in INCLUDE.finditer(text):
            delim, name = m.group(1), m.group(2)
            target = included_part(delim, name)
            line = text.count("\n", 0, m.start()) + 1
            if target is None or target == part:
                continue
            if target == "":
                yield path, line, f'#include "{name}" names no part (write "part/{name}")'
            elif target not in BELOW:
                yield path, line, f'#include "{name}": "{target}/" is not a part'
            elif target not in BELOW[part]:
                yield path, line, f'{part} may not include {name} ({target} is not below {part})'


def read_tree(root):
    files = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            if name.endswith(SOURCES):
                full = os.path.join(dirpath, name)
                with open(full, encoding="utf-8", errors="replace") as f:
                    files[os.path.relpath(full, root).replace(os.sep, "/")] = f.read()
    return files


def self_test():
    """The checker must catch what it exists to catch, or its passing means nothing."""
    tree = {
        "base/log.c": '#include "base/log.h"\n#include "relay/relay.h"\n',
        "net/loop.c": '#include "parse/activity.h"\n#include <handoffd/parse.h>\n',
        "relay/relay.c": '#include "directline/directline.h"\n#include "daemon/runtime.h"\n',
        "daemon/main.c": '#include "relay/relay.h"\n#include "script/script_host.h"\n#include "x.h"\n',
    }
    found = {(p, line) for p, line, _ in violations(tree)}
    want = {("base/log.c", 2), ("net/loop.c", 1), ("net/loop.c", 2), ("relay/relay.c", 2), ("daemon/main.c", 3)}
    if found != want:
        sys.exit(f"check_layers self-test failed: found {sorted(found)}, want {sorted(want)}")


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..", "runtime")
    self_test()
    files = read_tree(root)
    if not files:
        sys.exit(f"check_layers: no sources under {root}")
    bad = list(violations(files))
    for path, line, msg in bad:
        print(f"runtime/{path}:{line}: {msg}")
    if bad:
        sys.exit(1)
    print(f"check_layers: {len(files)} files, no upward include")


if __name__ == "__main__":
    main()
