"""Retained messages: a store indexed by topic level, bounded per owner and in total.

Theory of operation
-------------------
The hub keeps the last retained message of each topic (MQTT-3.3.1-5) and sends a new
subscription the ones its filter matches (MQTT-3.3.1-6). :class:`RetainedStore` keeps them in a
trie with one node per topic level: a dictionary of literal children and the entry of the topic
that ends on the node. It is the reverse of :class:`~enos_lab.mqtt._topics.TopicTree`, which
stores filters and walks a topic; here topics are stored and a filter is walked. A literal
level follows one child, ``+`` every child (an empty level too), ``#`` takes the node itself and
its whole subtree (``a/#`` matches ``a``, MQTT 4.7.1.2), and at the first level a wildcard skips
the children starting with ``$`` (MQTT-4.7.2-1). A lookup visits only the part of the trie its
filter can match. :func:`~enos_lab.mqtt._topics.topic_matches` stays the one statement of the
rule; the tests check that this walk agrees with it. Removing a topic prunes the nodes it leaves
empty, so topics that come and go leave nothing behind; leaves share one empty children
dictionary and level names are interned, which keeps a node small.

Bounds: a message costs ``len(payload) + len(topic.encode())`` bytes. The store counts messages
and bytes in total and per owner (the client that published the topic's current message;
``None`` for messages of the hub itself, which only the totals bound) and refuses a message that
would pass a bound (:meth:`RetainedStore.store` returns ``False`` and keeps the old one). The
per-owner usage is updated in O(1); an owner whose usage falls to zero is forgotten.

Expiry: a message with a message expiry interval is pushed on a heap by its expiry time; every
:meth:`~RetainedStore.store` and :meth:`~RetainedStore.matching` first removes what has expired
(MQTT-3.3.2-5), so expired messages neither reach subscribers nor hold anybody's budget. Heap
items of messages replaced or removed earlier are skipped when popped; the heap is compacted when
they outnumber the live ones.
"""

from __future__ import annotations

import heapq
import sys
from collections.abc import Hashable

from enos_lab.errors import InvalidArgument
from enos_lab.hub._types import Message

__all__ = ["RetainedStore"]

_COMPACT_SLACK = 64  # stale heap items tolerated beyond twice the live ones
_LEAF: dict[str, _Node] = {}  # the children of every leaf; never changed


class _Entry:
    """The retained message of one topic with its accounting."""

    __slots__ = ("live", "message", "owner", "size", "stored_at")

    def __init__(self, message: Message, stored_at: float, owner: Hashable | None, size: int):
        self.message = message
        self.stored_at = stored_at  # [s] on the hub's clock
        self.owner = owner
        self.size = size  # [bytes] payload + UTF-8 topic
        self.live = True  # False once replaced or removed


class _Node:
    """One topic level: the literal children and the entry of the topic ending here."""

    __slots__ = ("children", "entry")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = _LEAF
        self.entry: _Entry | None = None


class RetainedStore:
    """Retained messages by topic, indexed by topic level, with bounds per owner and in total.

    ``max_messages`` / ``max_bytes`` bound the whole store, ``max_messages_per_owner`` /
    ``max_bytes_per_owner`` what one owner's messages take; a message's size is
    ``len(payload) + len(topic.encode())``. [bytes] All four must be positive ints
    (:class:`~enos_lab.errors.InvalidArgument` otherwise). Times (``now``, ``stored_at``) are
    readings of one monotonic clock, the hub's. [s] Topics and filters are not validated here:
    pass ones the codec or :func:`~enos_lab.mqtt._topics.validate_topic_filter` accepted.
    """

    __slots__ = (
        "_bytes",
        "_count",
        "_expiring",
        "_heap",
        "_max_bytes",
        "_max_bytes_per_owner",
        "_max_messages",
        "_max_messages_per_owner",
        "_nodes",
        "_owners",
        "_root",
        "_seq",
        "_visited",
    )

    def __init__(
        self,
        *,
        max_messages: int,
        max_bytes: int,
        max_messages_per_owner: int,
        max_bytes_per_owner: int,
    ) -> None:
        bounds = {
            "max_messages": max_messages,
            "max_bytes": max_bytes,
            "max_messages_per_owner": max_messages_per_owner,
            "max_bytes_per_owner": max_bytes_per_owner,
        }
        for name, value in bounds.items():
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise InvalidArgument(f"RetainedStore {name} must be an int > 0, got {value!r}")
        self._max_messages = max_messages
        self._max_bytes = max_bytes
        self._max_messages_per_owner = max_messages_per_owner
        self._max_bytes_per_owner = max_bytes_per_owner
        self._root = _Node()
        self._count = 0
        self._bytes = 0
        self._nodes = 0  # nodes below the root
        self._owners: dict[Hashable, tuple[int, int]] = {}  # owner -> (messages, bytes)
        self._heap: list[tuple[float, int, _Entry]] = []  # (expires at [s], seq, entry)
        self._expiring = 0  # live entries with an expiry time
        self._seq = 0
        self._visited = 0

    def store(self, message: Message, owner: Hashable | None, now: float) -> bool:
        """Keep ``message`` as the retained message of its topic (empty payload: remove it,
        MQTT-3.3.1-10).

        Returns ``False``, storing nothing and leaving the old message in place, when keeping it
        would pass a bound (the owner's message count or bytes, or the totals). Replacing a
        topic's message counts the new size minus the old (and moves the topic to the new
        owner). ``owner`` ``None`` (server-originated) is bound only by the totals. ``now`` is
        the time of storing [s], the start of the message expiry interval.
        """
        if self._heap and self._heap[0][0] <= now:
            self._expire(now)
        topic = message.topic
        if not message.payload:
            self.remove(topic)  # MQTT-3.3.1-10
            return True
        size = len(message.payload) + len(topic.encode())
        levels = topic.split("/")
        node = self._root
        for level in levels:
            child = node.children.get(level)
            if child is None:
                old = None
                break
            node = child
        else:
            old = node.entry
        old_size = 0 if old is None else old.size
        if (
            self._count + (old is None) > self._max_messages
            or self._bytes + size - old_size > self._max_bytes
        ):
            return False
        if owner is not None:
            messages, used = self._owners.get(owner, (0, 0))
            if old is not None and old.owner == owner:
                used -= old_size
            else:
                messages += 1
            if messages > self._max_messages_per_owner or used + size > self._max_bytes_per_owner:
                return False
        if old is None:
            node = self._root
            for level in levels:
                child = node.children.get(level)
                if child is None:
                    if node.children is _LEAF:
                        node.children = {}
                    # levels such as "sys" or "thing" recur under every device: keep one copy
                    child = node.children[sys.intern(level)] = _Node()
                    self._nodes += 1
                node = child
        else:
            self._release(old)
        entry = node.entry = _Entry(message, now, owner, size)
        self._count += 1
        self._bytes += size
        if owner is not None:
            messages, used = self._owners.get(owner, (0, 0))
            self._owners[owner] = (messages + 1, used + size)
        expiry = message.properties.message_expiry_interval
        if expiry is not None:
            self._expiring += 1
            self._seq += 1
            heapq.heappush(self._heap, (now + expiry, self._seq, entry))
            if len(self._heap) > 2 * self._expiring + _COMPACT_SLACK:
                self._heap = [item for item in self._heap if item[2].live]
                heapq.heapify(self._heap)
        return True

    def matching(self, topic_filter: str, now: float) -> list[tuple[Message, float]]:
        """``(message, stored_at)`` of every retained topic the (non-shared) filter matches.

        Messages whose message expiry interval has passed are removed and not returned
        (MQTT-3.3.2-5). Order: unspecified. Costs in proportion to the nodes the filter can
        reach (:attr:`nodes_visited`), not to the number of retained messages.
        """
        if self._heap and self._heap[0][0] <= now:
            self._expire(now)
        root = self._root
        levels = topic_filter.split("/")
        depth = len(levels)
        out: list[tuple[Message, float]] = []
        stack = [(root, 0)]
        visited = 0
        while stack:
            node, i = stack.pop()
            visited += 1
            if i == depth:
                entry = node.entry
                if entry is not None:
                    out.append((entry.message, entry.stored_at))
                continue
            level = levels[i]
            if level == "+":
                step = i + 1  # '+' matches one level, an empty one too
            elif level == "#":
                # '#' matches the parent level and every level below (MQTT 4.7.1.2)
                entry = node.entry
                if entry is not None:
                    out.append((entry.message, entry.stored_at))
                step = i  # the children are matched by the same '#'
            else:
                nxt = node.children.get(level)
                if nxt is not None:
                    stack.append((nxt, i + 1))
                continue
            for key, child in node.children.items():
                if node is not root or key[:1] != "$":  # MQTT-4.7.2-1
                    stack.append((child, step))
        self._visited += visited
        return out

    def remove(self, topic: str) -> None:
        """Forget the retained message of ``topic`` (if any) and prune the nodes left empty."""
        path: list[tuple[_Node, str]] = []
        node = self._root
        for level in topic.split("/"):
            child = node.children.get(level)
            if child is None:
                return
            path.append((node, level))
            node = child
        entry = node.entry
        if entry is None:
            return
        node.entry = None
        self._release(entry)
        for parent, level in reversed(path):
            if node.entry is not None or node.children:
                break
            del parent.children[level]
            if not parent.children:
                parent.children = _LEAF
            self._nodes -= 1
            node = parent

    def _release(self, entry: _Entry) -> None:
        """Take ``entry`` (replaced or removed) out of the totals and its owner's usage."""
        entry.live = False
        self._count -= 1
        self._bytes -= entry.size
        if entry.message.properties.message_expiry_interval is not None:
            self._expiring -= 1
        owner = entry.owner
        if owner is not None:
            messages, used = self._owners[owner]
            if messages == 1:
                del self._owners[owner]  # usage 0: forget the owner
            else:
                self._owners[owner] = (messages - 1, used - entry.size)

    def _expire(self, now: float) -> None:
        """Remove every message whose expiry time is ``now`` or earlier (MQTT-3.3.2-5)."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)[2]
            if entry.live:
                self.remove(entry.message.topic)

    def __len__(self) -> int:
        """Number of retained messages."""
        return self._count

    @property
    def bytes(self) -> int:
        """Payload bytes + UTF-8 topic bytes of the retained messages. [bytes]"""
        return self._bytes

    def owner_usage(self, owner: Hashable) -> tuple[int, int]:
        """``(messages, bytes)`` of the retained messages ``owner`` published; ``(0, 0)`` if
        none. [bytes]"""
        return self._owners.get(owner, (0, 0))

    @property
    def owners(self) -> int:
        """Number of owners with at least one retained message."""
        return len(self._owners)

    @property
    def nodes(self) -> int:
        """Number of trie nodes (one per distinct topic prefix in levels) kept."""
        return self._nodes

    @property
    def nodes_visited(self) -> int:
        """Trie nodes the :meth:`matching` walks have visited since the store was made."""
        return self._visited
