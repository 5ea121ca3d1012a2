"""A request body read strictly: UTF-8 JSON, one object, every value one that can be stored.

``json.loads`` is lenient where an audit trail cannot be: given bytes it guesses UTF-16 and
UTF-32, it keeps the last of two equal keys, it reads ``NaN`` and ``1e999`` as floats, it
returns control characters and lone surrogates (``"\\ud800"``) inside strings, which
PostgreSQL refuses to store, and it recurses once per nesting level, so a deep enough body
is a RecursionError. Here each of those is a refusal in the contract's terms
(``invalid_request``, 400) naming the field, decided before anything is looked up.

Decisions: a UTF-8 byte order mark is refused too (RFC 8259 says senders MUST NOT add one),
so a body has exactly one accepted spelling of its first byte. Control characters are the
Unicode ``Cc`` category: C0 (U+0000–U+001F), DEL (U+007F) and C1 (U+0080–U+009F), which
no identifier or slug has a use for and which are mostly Latin-1 read as UTF-8 by mistake.
"""

import json
import math
import re
from typing import Any

from apps.issuance.contract import IssuanceError

MAX_DEPTH = 32
# Everything that nests, and every string (whole, escapes and all, unterminated ones to the
# end), so that brackets inside strings are skipped. Linear: the two string alternatives
# never overlap and an unterminated string matches to the end instead of failing.
_NESTING = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[{]|[\]}]', re.DOTALL)
# Control characters (C0, DEL, C1) and lone surrogates, which no encoder will write.
_UNSTORABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_FIELD_LIMIT = 64  # characters of one key shown in a field path


class _Object(list):
    """An object's (key, value) pairs as parsed, before its keys are checked."""


class _Constant(str):
    """``NaN``, ``Infinity`` or ``-Infinity``: not JSON numbers, refused with their path."""


def refused(field: str, message: str) -> IssuanceError:
    return IssuanceError("invalid_request", 400, f"{field}: {message}", extra={"field": field})


def json_object(raw: bytes) -> dict[str, Any]:
    """``raw`` as a dict, or IssuanceError naming the first problem."""
    text = _utf8(raw)
    _check_depth(text)
    try:
        # strict=False lets a raw control character inside a string through to _checked,
        # which refuses it naming its field.
        parsed = json.loads(text, strict=False, object_pairs_hook=_Object, parse_constant=_Constant)
    except json.JSONDecodeError as error:
        raise refused("body", f"is not valid JSON ({error.msg} at character {error.pos})") from None
    except ValueError:  # an integer past Python's digit limit
        raise refused("body", "is not valid JSON (a number is too long)") from None
    if not isinstance(parsed, _Object):
        raise refused("body", "must be a JSON object")
    return _checked(parsed)


def _utf8(raw: bytes) -> str:
    if not raw.strip():
        raise refused("body", "is empty; send a JSON object")
    if raw.startswith(b"\xef\xbb\xbf"):
        raise refused("body", "starts with a byte order mark; send UTF-8 without one")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in raw[:4]:
        # A JSON text starts with an ASCII character, which UTF-16 and UTF-32 spell with NUL
        # bytes beside it (RFC 4627's detection); json.loads would have decoded them.
        raise refused("body", "is not UTF-8 (it looks like UTF-16 or UTF-32)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise refused("body", f"is not valid UTF-8 (at byte {error.start})") from None


def _check_depth(text: str) -> None:
    """Refuse nesting past MAX_DEPTH before the parser, which recurses, sees it."""
    depth = 0
    for match in _NESTING.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth > MAX_DEPTH:
                raise refused("body", f"nests deeper than {MAX_DEPTH} levels")
        elif token in ("]", "}"):
            depth -= 1


def _checked(root: _Object) -> dict[str, Any]:
    """The parsed tree as dicts and lists, each key and value checked, in document order;
    without recursion."""
    result: dict[str, Any] = {}
    # (parsed node, its path, the container its value goes into, the key or index there)
    stack: list[tuple[Any, str, Any, Any]] = [(root, "", None, None)]
    while stack:
        node, path, parent, slot = stack.pop()
        value = node
        if isinstance(node, _Object):
            value = result if parent is None else {}
            children = []
            for key, item in node:
                field = f"{path}.{shown_key(key)}" if path else shown_key(key)
                if _UNSTORABLE.search(key):
                    raise refused(field, f"the key has {_unstorable(key)}")
                if key in value:
                    raise refused(field, "appears more than once")
                value[key] = None
                children.append((item, field, value, key))
            stack.extend(reversed(children))
        elif isinstance(node, list):
            value = [None] * len(node)
            children = [(item, f"{path}.{index}", value, index) for index, item in enumerate(node)]
            stack.extend(reversed(children))
        elif isinstance(node, _Constant):
            raise refused(path, f"{node} is not a JSON number")
        elif isinstance(node, float) and not math.isfinite(node):
            raise refused(path, "is too large a number")
        elif isinstance(node, str) and _UNSTORABLE.search(node):
            raise refused(path, f"has {_unstorable(node)}")
        if parent is not None:
            parent[slot] = value
    return result


def _unstorable(text: str) -> str:
    char = _UNSTORABLE.search(text).group()
    if "\ud800" <= char <= "\udfff":
        return f"a lone surrogate U+{ord(char):04X}, which is not a character"
    return f"a control character U+{ord(char):04X}"


def shown_key(key: str) -> str:
    """A key as a field path shows it: unstorable characters escaped, long ones cut."""
    if not key:
        return '""'
    shown = _UNSTORABLE.sub(lambda match: f"\\u{ord(match.group()):04x}", key)
    return shown if len(shown) <= _FIELD_LIMIT else shown[:_FIELD_LIMIT] + "…"
