"""The text of the store's JSON columns and their values: the engine's serializer and deserializer (and the text
the bulk writers put in their hand-written statements)."""

from __future__ import annotations

import copy
import json
from typing import Any

from sematic_k8s.errors import CorruptRecord

_JSON_SEEN: dict[int, tuple[Any, Any, str]] = {}  # id -> (the dict, a copy, its JSON): settings shared by runs


def json_text(value: Any) -> str:
    """JSON columns' text: ``json.dumps``, with the common cases cheap (null, {}, and a dict many rows share,
    such as a func's settings on each of its runs: encoded once, checked unchanged by comparison)."""
    if value is None:
        return "null"
    if type(value) is dict:
        if not value:
            return "{}"
        seen = _JSON_SEEN.get(id(value))
        if seen is not None and seen[0] is value and seen[1] == value:
            return seen[2]
        text = json.dumps(value)
        if len(value) >= 8:  # settings-like: worth remembering
            if len(_JSON_SEEN) > 1024:
                _JSON_SEEN.clear()
            _JSON_SEEN[id(value)] = (value, copy.deepcopy(value), text)
        return text
    return json.dumps(value)


def json_value(text: str | bytes) -> Any:
    """A JSON column's value; :class:`CorruptRecord` when its text is not JSON (an edited or damaged database)."""
    try:
        return json.loads(text)
    except ValueError as e:
        raise CorruptRecord(text if isinstance(text, str) else text.decode(errors="replace"), str(e)) from None
