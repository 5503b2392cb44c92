#!/usr/bin/env python3
"""check_config_docs.py - README's config tables and config.c's key table agree (ctest:
lint.config_docs).

config.c's key table is the one place a default is written in code; README repeats each
default for readers. This check fails on a key README does not mention, a top-level or
directline key README lists that config.c does not have, and a default that differs.
Usage: check_config_docs.py [SOURCE_DIR]
"""
import os
import re
import sys

TABLE = re.compile(r"static const struct config_key (\w+)_keys\[\] = \{(.*?)\n\};", re.S)
ENTRY = re.compile(r'\{ "(\w+)", (KEY_\w+)(.*?)\},', re.S)
ROW = re.compile(r"^\| (`[^|]*`) \| (\w+) \|\s*([^|]*?)\s*\| (.*) \|$", re.M)
NESTED_DEFAULT = re.compile(r"default ([^;:,)\s]+)")


def c_default(kind, rest):
    """The default a key-table entry gives, as README would write it (None: none)."""
    m = re.search(r'\.string = "([^"]*)"', rest)
    if m:
        return m.group(1)
    m = re.search(r"\.number = ([^,}]+)", rest)
    if m:
        return float(eval(m.group(1).strip(), {"__builtins__": {}}))  # a C constant expression
    m = re.search(r"\.boolean = (true|false)", rest)
    if m:
        return m.group(1) == "true"
    return {"KEY_NUMBER": 0.0, "KEY_BOOL": False}.get(kind)


def code_keys(config_c):
    """{qualified key: (kind, default)} of every key-table entry; the tables (directline,
    hub, ...) have kind None."""
    keys = {}
    for table, body in TABLE.findall(config_c):
        prefix = "" if table == "top" else table + "."
        for name, kind, rest in ENTRY.findall(body):
            table_kind = kind in ("KEY_TABLE", "KEY_MODULE_TABLE")
            keys[prefix + name] = (None, None) if table_kind else (kind, c_default(kind, rest))
    return keys


def doc_value(text):
    """A default as README writes it: `"s"`, `5e7`, `false`, or none."""
    text = text.strip().strip("`").strip()
    if text in ("", "none", "system store", "**required**"):
        return None
    if text in ("true", "false"):
        return text == "true"
    if text.startswith('"') and text.endswith('"'):
        return text[1:-1]
    try:
        return float(text)
    except ValueError:
        return text


def nested_defaults(cell_default, meaning):
    """The keys a table row names in its meaning (`key` (..., default X)) or its default
    cell ({key = "v"}), with the default each is given (None: none)."""
    found = {}
    for m in re.finditer(r"`(\w+)`( \(((?:[^()]|\([^()]*\))*)\))?", meaning):
        d = NESTED_DEFAULT.search(m.group(3) or "")
        found.setdefault(m.group(1), doc_value(d.group(1)) if d else None)
    for name, value in re.findall(r"\{(\w+) = (\"[^\"]*\"|[^}\s]+)\}", cell_default.strip("`")):
        found[name] = doc_value(value)
    return found


def doc_keys(readme):
    """{qualified key: default} from the top-level table and the `directline` keys table."""
    keys = {}
    section = readme.split("| key | type | default | meaning |")
    for i, part in enumerate(section[1:]):
        prefix = "" if i == 0 else "directline."
        table = part.split("\n\n", 1)[0]
        for names, kind, default, meaning in ROW.findall(table):
            names = re.findall(r"`(\w+)`", names)
            if kind == "table" and prefix == "" and names[0] != "directline":
                for sub, value in nested_defaults(default, meaning).items():
                    keys[f"{names[0]}.{sub}"] = value
                continue
            values = [doc_value(v) for v in default.split(",")] if len(names) > 1 else [doc_value(default)]
            for name, value in zip(names, values if len(values) == len(names) else [None] * len(names)):
                keys[prefix + name] = value
        if i == 1:
            break
    return keys


def problems(code, doc):
    for key, (kind, default) in sorted(code.items()):
        if kind is None:
            continue
        if key not in doc:
            yield f"{key}: in config.c's key table, not in README's config tables"
        elif doc[key] is None and default not in (None, 0.0, False):
            yield f"{key}: config.c gives it the default {default!r}, README none"
        elif doc[key] is not None and doc[key] != default:
            yield f"{key}: README says the default is {doc[key]!r}, config.c {default!r}"
    for key in sorted(doc):
        in_a_row_of_its_own = "." not in key or key.startswith("directline.")
        if in_a_row_of_its_own and key not in code:
            yield f"{key}: in README's config tables, not in config.c's key table"


def self_test():
    code = {"a": ("KEY_NUMBER", 5.0), "b": ("KEY_STRING", None), "t.c": ("KEY_BOOL", True)}
    good = {"a": 5.0, "b": None, "t.c": True}
    bad = {"a": 6.0, "t.c": None, "z": 1.0}
    if list(problems(code, good)) or len(list(problems(code, bad))) != 4:
        sys.exit("check_config_docs self-test failed")


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..")
    self_test()
    with open(os.path.join(src, "runtime", "base", "config.c"), encoding="utf-8") as f:
        code = code_keys(f.read())
    with open(os.path.join(src, "README.md"), encoding="utf-8") as f:
        doc = doc_keys(f.read())
    if len(code) < 40 or len(doc) < 40:
        sys.exit(f"check_config_docs: read {len(code)} keys from config.c and {len(doc)} from README")
    bad = list(problems(code, doc))
    for p in bad:
        print(p)
    if bad:
        sys.exit(1)
    print(f"check_config_docs: {len(code)} keys, README and config.c agree on every default")


if __name__ == "__main__":
    main()
