"""A reader for Java .properties files, the format of Sweet Home 3D's catalogues.

Java's rules (java.util.Properties.load): ISO-8859-1 bytes; `#` or `!` as the first
non-blank character makes a comment line; a line ending in an odd number of backslashes
continues on the next, whose leading blanks are dropped; the key ends at the first
unescaped `=`, `:` or blank, and one `=`/`:` with blanks around it separates it from
the value; `\\uXXXX`, `\\t`, `\\n`, `\\r`, `\\f` are escapes and a backslash before any
other character stands for that character. Written here rather than depending on a
package because it is forty lines and the catalogues need exactly Java's behaviour.
"""

from __future__ import annotations

import re

_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.DOTALL)
_BLANKS = " \t\f"


def parse_properties(data: bytes) -> dict[str, str]:
    """The key -> value pairs of a .properties file's bytes; a later key overrides an earlier one."""
    result: dict[str, str] = {}
    for line in _logical_lines(data.decode("iso-8859-1")):
        key_end = _key_end(line)
        rest = line[key_end:].lstrip(_BLANKS)
        if rest[:1] in ("=", ":"):
            rest = rest[1:].lstrip(_BLANKS)
        result[_unescape(line[:key_end])] = _unescape(rest)
    return result


def _logical_lines(text: str):
    """Join continued lines and drop comments and blank lines (escapes still in place)."""
    pending = None
    for natural in text.splitlines():
        line = natural.lstrip(_BLANKS)
        if pending is None and (not line or line[0] in "#!"):
            continue
        pending = line if pending is None else pending + line
        trailing = len(pending) - len(pending.rstrip("\\"))
        if trailing % 2:  # an odd count: the last backslash escapes the line break
            pending = pending[:-1]
        else:
            yield pending
            pending = None
    if pending is not None:  # a continuation at the end of the file ends the entry
        yield pending


def _key_end(line: str) -> int:
    index = 0
    while index < len(line):
        char = line[index]
        if char == "\\":
            index += 2
            continue
        if char in "=:" or char in _BLANKS:
            return index
        index += 1
    return len(line)


def _unescape(text: str) -> str:
    def replace(match: re.Match) -> str:
        escaped = match.group(1)
        if len(escaped) == 5:
            return chr(int(escaped[1:], 16))
        return _ESCAPES.get(escaped, escaped)

    return _ESCAPE.sub(replace, text)
