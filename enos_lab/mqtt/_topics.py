"""MQTT topic names, topic filters and the one topic matcher (MQTT 3.1.1 / 5.0 section 4.7).

Theory of operation
-------------------
:class:`TopicTree` is a trie with one node per topic level. Each node has a dictionary of
literal children and separate slots for its ``+`` child and its ``#`` child; the entries
(``(topic_filter, key) -> value``) of a filter live on the node where the filter ends. Matching a
topic splits it into levels once and walks the trie: at each node the ``#`` child matches
everything from here on (including "nothing", so ``a/#`` matches ``a``, MQTT 4.7.1.2), the
literal child and the ``+`` child consume one level (``+`` also matches an empty level). At the
root, a topic starting with ``$`` skips the wildcard children (MQTT-4.7.2-1).

There is exactly one matching algorithm: :func:`topic_matches` builds a one-entry tree and asks
it, so routing and access control cannot disagree.

A shared subscription ``$share/{ShareName}/{filter}`` (MQTT 5.0 4.8.2) is stored under its
``filter``: it matches what ``filter`` matches, and the full string (with the share name) is
reported back, so that a router can pick one subscriber per share group.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Generic, TypeVar

from enos_lab.errors import TopicError

__all__ = [
    "TopicTree",
    "parse_shared",
    "topic_matches",
    "validate_topic_filter",
    "validate_topic_name",
]

K = TypeVar("K")
V = TypeVar("V")

_MAX_TOPIC_BYTES = 65535  # a UTF-8 encoded string on the wire (1.5.3 / 1.5.4)
_SHARE_PREFIX = "$share/"


def _check_string(text: str, what: str) -> None:
    if not text:
        raise TopicError(f"{what} must not be empty")  # MQTT-4.7.3-1
    if "\x00" in text:
        raise TopicError(f"{what} {text!r} contains U+0000")  # MQTT-4.7.3-2
    try:
        size = len(text.encode())
    except UnicodeEncodeError as exc:
        raise TopicError(f"{what} {text!r} is not valid UTF-8 (lone surrogate)") from exc
    if size > _MAX_TOPIC_BYTES:
        # MQTT-4.7.3-3
        raise TopicError(f"{what} is {size} bytes long, more than {_MAX_TOPIC_BYTES}")


def validate_topic_name(name: str) -> None:
    """Check a topic name (what a PUBLISH is sent to); raise :class:`TopicError` if invalid.

    A topic name is non-empty, at most 65535 bytes of UTF-8, without U+0000 and without the
    wildcards ``+`` and ``#`` (MQTT 4.7, MQTT-3.3.2-2).
    """
    _check_string(name, "topic name")
    if "+" in name or "#" in name:
        raise TopicError(f"topic name {name!r} contains a wildcard")  # MQTT-3.3.2-2


def _check_filter_levels(topic_filter: str, what: str) -> None:
    levels = topic_filter.split("/")
    last = len(levels) - 1
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != last):
            # MQTT-4.7.1-2: '#' alone in the last level
            raise TopicError(f"{what} {topic_filter!r}: '#' must be the whole last level")
        if "+" in level and level != "+":
            # MQTT-4.7.1-3: '+' occupies an entire level
            raise TopicError(f"{what} {topic_filter!r}: '+' must occupy a whole level")


def validate_topic_filter(topic_filter: str) -> None:
    """Check a topic filter (what a SUBSCRIBE names); raise :class:`TopicError` if invalid.

    Besides the rules of :func:`validate_topic_name` without the wildcard ban, ``#`` must be the
    whole last level, ``+`` a whole level (MQTT 4.7.1), and a shared subscription must have the
    form ``$share/{ShareName}/{filter}`` (MQTT 5.0 4.8.2, see :func:`parse_shared`).
    """
    _check_string(topic_filter, "topic filter")
    _share, inner = parse_shared(topic_filter)
    _check_filter_levels(inner, "topic filter")


def parse_shared(topic_filter: str) -> tuple[str | None, str]:
    """Split a shared subscription into ``(share_name, filter)``; ``(None, topic_filter)`` else.

    ``"$share/group/a/b"`` gives ``("group", "a/b")``. Raises :class:`TopicError` for a bad shared
    form: an empty share name or one containing ``+`` or ``#`` (MQTT-4.8.2-1, MQTT-4.8.2-2), or
    no filter after it. The filter part itself is not validated here
    (:func:`validate_topic_filter` does both).
    """
    if not topic_filter.startswith(_SHARE_PREFIX):
        return None, topic_filter
    rest = topic_filter[len(_SHARE_PREFIX) :]
    share, sep, inner = rest.partition("/")
    if not share:
        raise TopicError(f"shared subscription {topic_filter!r} has no share name")  # MQTT-4.8.2-1
    if "+" in share or "#" in share:
        # MQTT-4.8.2-2: the ShareName must not contain '/', '+' or '#'
        raise TopicError(f"share name {share!r} contains a wildcard")
    if not sep or not inner:
        raise TopicError(f"shared subscription {topic_filter!r} has no topic filter")  # 4.8.2
    return share, inner


class _Node(Generic[K, V]):
    """One level of the trie."""

    __slots__ = ("children", "entries", "hash", "plus")

    def __init__(self) -> None:
        self.children: dict[str, _Node[K, V]] = {}
        self.plus: _Node[K, V] | None = None
        self.hash: _Node[K, V] | None = None
        # (topic_filter, key) -> (topic_filter, key, value): match() returns the values as is
        self.entries: dict[tuple[str, K], tuple[str, K, V]] = {}

    def is_empty(self) -> bool:
        return not (self.entries or self.children or self.plus or self.hash)


def _collect(node: _Node[K, V], levels: list[str], i: int, out: list[tuple[str, K, V]]) -> None:
    """Append the entries of every filter below ``node`` matching ``levels[i:]`` to ``out``."""
    while True:
        hash_node = node.hash
        if hash_node is not None:
            out.extend(hash_node.entries.values())  # '#' matches the rest, even nothing
        if i == len(levels):
            if node.entries:
                out.extend(node.entries.values())
            return
        plus = node.plus
        if plus is not None:
            _collect(plus, levels, i + 1, out)  # '+' matches one level, even an empty one
        child = node.children.get(levels[i])
        if child is None:
            return
        node = child
        i += 1


class TopicTree(Generic[K, V]):
    """Topic filters with a value per ``(topic_filter, key)``; finds the filters matching a topic.

    The one matcher of the package, used for routing (key: client id, value: subscription
    options) and for access control (key: rule id, value: permission) alike. Filters are
    validated on insertion (:class:`TopicError` if invalid); topics given to :meth:`match` are
    not validated (pass a valid topic name, e.g. one checked by the codec).
    """

    __slots__ = ("_count", "_root")

    def __init__(self) -> None:
        self._root: _Node[K, V] = _Node()
        self._count = 0

    @staticmethod
    def _levels(topic_filter: str) -> list[str]:
        return parse_shared(topic_filter)[1].split("/")

    def _find(self, topic_filter: str) -> _Node[K, V] | None:
        node: _Node[K, V] | None = self._root
        for level in self._levels(topic_filter):
            assert node is not None
            if level == "+":
                node = node.plus
            elif level == "#":
                node = node.hash
            else:
                node = node.children.get(level)
            if node is None:
                return None
        return node

    def insert(self, topic_filter: str, key: K, value: V) -> V | None:
        """Add or replace the value of ``(topic_filter, key)``; return the replaced value."""
        validate_topic_filter(topic_filter)
        node = self._root
        for level in self._levels(topic_filter):
            if level == "+":
                nxt = node.plus
                if nxt is None:
                    nxt = node.plus = _Node()
            elif level == "#":
                nxt = node.hash
                if nxt is None:
                    nxt = node.hash = _Node()
            else:
                nxt = node.children.get(level)
                if nxt is None:
                    nxt = node.children[level] = _Node()
            node = nxt
        old = node.entries.get((topic_filter, key))
        node.entries[(topic_filter, key)] = (topic_filter, key, value)
        if old is None:
            self._count += 1
            return None
        return old[2]

    def get(self, topic_filter: str, key: K) -> V | None:
        """Return the value of ``(topic_filter, key)``, or ``None`` if absent."""
        try:
            node = self._find(topic_filter)
        except TopicError:
            return None
        if node is None:
            return None
        entry = node.entries.get((topic_filter, key))
        return None if entry is None else entry[2]

    def remove(self, topic_filter: str, key: K) -> V | None:
        """Remove ``(topic_filter, key)``; return its value, or ``None`` if it was absent."""
        try:
            levels = self._levels(topic_filter)
        except TopicError:
            return None
        path: list[tuple[_Node[K, V], str]] = []
        node: _Node[K, V] | None = self._root
        for level in levels:
            assert node is not None
            path.append((node, level))
            if level == "+":
                node = node.plus
            elif level == "#":
                node = node.hash
            else:
                node = node.children.get(level)
            if node is None:
                return None
        assert node is not None
        entry = node.entries.pop((topic_filter, key), None)
        if entry is None:
            return None
        self._count -= 1
        # prune nodes left empty, bottom up
        for parent, level in reversed(path):
            if not node.is_empty():
                break
            if level == "+":
                parent.plus = None
            elif level == "#":
                parent.hash = None
            else:
                del parent.children[level]
            node = parent
        return entry[2]

    def match(self, topic: str) -> list[tuple[str, K, V]]:
        """Return ``(topic_filter, key, value)`` for every filter matching the topic name.

        ``+`` matches exactly one level, ``#`` any number of trailing levels including none
        (``a/#`` matches ``a``); filters starting with a wildcard do not match topics starting
        with ``$`` (MQTT-4.7.2-1). Order: unspecified.
        """
        out: list[tuple[str, K, V]] = []
        levels = topic.split("/")
        root = self._root
        if topic[:1] == "$":
            # MQTT-4.7.2-1: only literal first levels match a '$' topic
            child = root.children.get(levels[0])
            if child is not None:
                _collect(child, levels, 1, out)
            return out
        _collect(root, levels, 0, out)
        return out

    def __len__(self) -> int:
        """Number of ``(topic_filter, key)`` entries."""
        return self._count


@lru_cache(maxsize=1024)
def _single(topic_filter: str) -> TopicTree[None, None]:
    """A one-entry tree for ``topic_filter`` (memoised; never changed after construction)."""
    tree: TopicTree[None, None] = TopicTree()
    tree.insert(topic_filter, None, None)
    return tree


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Tell whether ``topic_filter`` matches the topic name ``topic`` (same rules as TopicTree).

    Implemented with a one-entry :class:`TopicTree`, so both always agree. Raises
    :class:`TopicError` if ``topic_filter`` is invalid.
    """
    return bool(_single(topic_filter).match(topic))
