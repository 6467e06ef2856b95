"""Device tags (``thing.tag.update``): normalise the params of a tag update.

EnOS rules (protocol reference 7.4): params is a list of ``{"tagKey": k, "tagValue": v}``; a key
has at most 100 characters from ``[A-Za-z0-9_]`` and starts with a letter or ``_``; values are
strings (the Python SDK may send ints: they are coerced to strings, as are floats and bools,
which become ``"true"``/``"false"`` [R]); at most 200 tags per message. EnOS publishes no code for a
bad tag update; 1200 (parse error) is used. [R]
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..errors import ValidationError

__all__ = ["CODE_TAG_FORMAT", "MAX_TAGS", "normalise_tags"]

CODE_TAG_FORMAT = 1200
"""Reply code for a malformed tag update. [R]"""
MAX_TAGS = 200
"""Most tags one update may carry (EnOS: 200 entries per map)."""

_TAG_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}\Z")


def normalise_tags(params: Any) -> dict[str, str]:
    """Turn tag-update params into ``{tag_key: tag_value}`` with string values.

    Accepts the EnOS list form and, for convenience, a plain ``{key: value}`` object. Raises
    ValidationError (code 1200) naming the bad entry.
    """
    if isinstance(params, dict):
        pairs = list(params.items())
    elif isinstance(params, list):
        pairs = []
        for index, entry in enumerate(params):
            if not isinstance(entry, dict) or "tagKey" not in entry or "tagValue" not in entry:
                raise ValidationError(
                    f"tag update entry [{index}]: expected {{'tagKey': ..., 'tagValue': ...}}, "
                    f"found {entry!r}",
                    CODE_TAG_FORMAT,
                )
            pairs.append((entry["tagKey"], entry["tagValue"]))
    else:
        raise ValidationError(
            f"tag update: expected a list of tags, found {params!r}", CODE_TAG_FORMAT
        )
    if len(pairs) > MAX_TAGS:
        raise ValidationError(
            f"tag update: at most {MAX_TAGS} tags, found {len(pairs)}", CODE_TAG_FORMAT
        )
    out: dict[str, str] = {}
    for key, value in pairs:
        if not isinstance(key, str) or not _TAG_KEY.match(key):
            raise ValidationError(
                "tag update: tag key must match [A-Za-z_][A-Za-z0-9_]* (<= 100 chars), "
                f"found {key!r}",
                CODE_TAG_FORMAT,
            )
        if isinstance(value, str):
            out[key] = value
        elif isinstance(value, bool | int | float):
            out[key] = json.dumps(value)
        else:
            raise ValidationError(
                f"tag update: tag {key!r} value must be a string or number, found {value!r}",
                CODE_TAG_FORMAT,
            )
    return out
