"""MQTT topic names, topic filters, shared subscriptions and the topic tree (MQTT 4.7, 4.8.2)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enos_lab.errors import InvalidArgument, TopicError
from enos_lab.mqtt import (
    TopicTree,
    parse_shared,
    topic_matches,
    validate_topic_filter,
    validate_topic_name,
)

VALID_NAMES = ["a", "a/b", "/", "//", "/a", "a/", "$SYS/x", "température/°C", "a b", "a" * 65535]
INVALID_NAMES = ["", "a/+", "+", "#", "a/#", "a+b", "a#", "a\x00b", "\udc80", "é" * 32768]


@pytest.mark.parametrize("name", VALID_NAMES)
def test_valid_topic_names(name: str) -> None:
    validate_topic_name(name)


@pytest.mark.parametrize("name", INVALID_NAMES)
def test_invalid_topic_names(name: str) -> None:
    with pytest.raises(TopicError):
        validate_topic_name(name)


VALID_FILTERS = [
    "a", "a/b", "#", "+", "+/+", "a/+/c", "a/#", "+/#", "/+", "+/", "/#", "//", "$SYS/#",
    "$share/g/a", "$share/g/#", "$share/g/+/b", "$share/g//", "$shared/a", "$share",
    "sport/tennis/+/#", "a" * 65535,
]  # fmt: skip
INVALID_FILTERS = [
    "", "a#", "#/a", "a/#/b", "##", "a/b#", "+a", "a/+b", "a+/b", "++", "a\x00", "\udc80",
    "$share/", "$share//a", "$share/g", "$share/g/", "$share/g+/a", "$share/g#/a",
    "$share/g/a#", "$share/g/#/a", "é" * 32768,
]  # fmt: skip


@pytest.mark.parametrize("topic_filter", VALID_FILTERS)
def test_valid_topic_filters(topic_filter: str) -> None:
    validate_topic_filter(topic_filter)


@pytest.mark.parametrize("topic_filter", INVALID_FILTERS)
def test_invalid_topic_filters(topic_filter: str) -> None:
    with pytest.raises(TopicError):
        validate_topic_filter(topic_filter)


def test_topic_error_is_an_invalid_argument() -> None:
    with pytest.raises(InvalidArgument):
        validate_topic_name("")
    with pytest.raises(ValueError):
        validate_topic_filter("a#")


@pytest.mark.parametrize(
    ("topic_filter", "expected"),
    [
        ("$share/group/a/b", ("group", "a/b")),
        ("$share/g/#", ("g", "#")),
        ("$share/g//", ("g", "/")),
        ("a/b", (None, "a/b")),
        ("$share", (None, "$share")),
        ("$SYS/share/a", (None, "$SYS/share/a")),
    ],
)
def test_parse_shared(topic_filter: str, expected: tuple[str | None, str]) -> None:
    assert parse_shared(topic_filter) == expected


@pytest.mark.parametrize(
    "topic_filter", ["$share/", "$share//a", "$share/g", "$share/g/", "$share/+/a"]
)
def test_parse_shared_bad_form(topic_filter: str) -> None:
    with pytest.raises(TopicError):
        parse_shared(topic_filter)


MATCHES = [
    # (filter, topic, matches)
    ("a/b", "a/b", True),
    ("a/b", "a/c", False),
    ("a/b", "a/b/c", False),
    ("a/b", "a", False),
    ("A/b", "a/b", False),  # case sensitive
    ("+", "a", True),
    ("+", "a/b", False),
    ("+", "", True),  # '+' matches the single empty level
    ("+", "/", False),
    ("+/+", "/", True),  # two empty levels
    ("/+", "/a", True),
    ("/+", "a", False),
    ("a/+", "a/", True),  # '+' matches an empty level
    ("a/+", "a", False),
    ("a/+/c", "a/b/c", True),
    ("a/+/c", "a//c", True),
    ("a/+/c", "a/b/d", False),
    ("#", "a", True),
    ("#", "a/b/c", True),
    ("#", "/", True),
    ("a/#", "a", True),  # MQTT 4.7.1.2: also the parent level
    ("a/#", "a/", True),
    ("a/#", "a/b/c", True),
    ("a/#", "b", False),
    ("a/#", "ab", False),
    ("+/#", "a", True),
    ("+/#", "a/b", True),
    ("a/+/#", "a/b", True),
    ("a/+/#", "a", False),
    ("sport/tennis/player1/#", "sport/tennis/player1", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
    ("sport/tennis/+", "sport/tennis/player1/ranking", False),
    ("sport/+", "sport", False),
    ("sport/+", "sport/", True),
    # MQTT-4.7.2-1: wildcard-first filters do not match '$' topics
    ("#", "$SYS/x", False),
    ("+/x", "$SYS/x", False),
    ("+", "$SYS", False),
    ("$SYS/#", "$SYS/x", True),
    ("$SYS/#", "$SYS", True),
    ("$SYS/+", "$SYS/x", True),
    ("$SYS/x", "$SYS/x", True),
    ("a/#", "a/$x", True),  # only the first level matters
    ("a/+", "a/$x", True),
    # shared subscriptions match like their filter part
    ("$share/g/a/+", "a/b", True),
    ("$share/g/#", "a/b", True),
    ("$share/g/#", "$SYS/a", False),
    ("$share/g/a", "$share/g/a", False),
    ("$share", "$share", True),
]


@pytest.mark.parametrize(("topic_filter", "topic", "expected"), MATCHES)
def test_topic_matches(topic_filter: str, topic: str, expected: bool) -> None:
    assert topic_matches(topic_filter, topic) is expected
    tree: TopicTree[str, int] = TopicTree()
    tree.insert(topic_filter, "k", 1)
    tree.insert("unrelated/filter", "k", 2)
    assert tree.match(topic) == ([(topic_filter, "k", 1)] if expected else [])


def test_topic_matches_refuses_invalid_filters() -> None:
    with pytest.raises(TopicError):
        topic_matches("a/#/b", "a")


def test_tree_insert_get_replace_remove() -> None:
    tree: TopicTree[str, int] = TopicTree()
    assert len(tree) == 0
    assert tree.insert("a/+", "c1", 1) is None
    assert tree.insert("a/+", "c2", 2) is None
    assert tree.insert("a/#", "c1", 3) is None
    assert tree.insert("$share/g/a/+", "c3", 4) is None
    assert len(tree) == 4
    assert tree.insert("a/+", "c1", 10) == 1  # replaced
    assert len(tree) == 4
    assert tree.get("a/+", "c1") == 10
    assert tree.get("a/+", "c9") is None
    assert tree.get("a/b", "c1") is None
    assert tree.get("a/#/x", "c1") is None  # invalid filter: simply absent
    assert sorted(tree.match("a/b")) == [
        ("$share/g/a/+", "c3", 4),
        ("a/#", "c1", 3),
        ("a/+", "c1", 10),
        ("a/+", "c2", 2),
    ]
    assert tree.match("a") == [("a/#", "c1", 3)]
    assert tree.remove("a/+", "c1") == 10
    assert tree.remove("a/+", "c1") is None
    assert tree.remove("x/y", "c1") is None
    assert tree.remove("$share/", "c1") is None
    assert len(tree) == 3
    assert sorted(tree.match("a/b")) == [
        ("$share/g/a/+", "c3", 4),
        ("a/#", "c1", 3),
        ("a/+", "c2", 2),
    ]
    for topic_filter, key in [("a/+", "c2"), ("a/#", "c1"), ("$share/g/a/+", "c3")]:
        assert tree.remove(topic_filter, key) is not None
    assert len(tree) == 0
    assert tree.match("a/b") == []
    # the tree pruned its nodes: the root is empty again
    assert tree._root.is_empty()


def test_tree_refuses_invalid_filters() -> None:
    tree: TopicTree[str, int] = TopicTree()
    with pytest.raises(TopicError):
        tree.insert("a/#/b", "k", 1)
    with pytest.raises(TopicError):
        tree.insert("$share/g", "k", 1)
    assert len(tree) == 0


# -- property-based: the tree agrees with topic_matches and with a reference ------------------

LEVELS = ["a", "b", "", "$x", "$SYS"]


def reference_match(topic_filter: str, topic: str) -> bool:
    """Straightforward statement of MQTT 4.7 (independent of the implementation)."""
    _share, inner = parse_shared(topic_filter)
    f_levels = inner.split("/")
    t_levels = topic.split("/")
    if topic.startswith("$") and f_levels[0] in ("+", "#"):
        return False
    for i, f in enumerate(f_levels):
        if f == "#":
            return True
        if i >= len(t_levels):
            return False
        if f != "+" and f != t_levels[i]:
            return False
    return len(f_levels) == len(t_levels)


topics = st.lists(st.sampled_from(LEVELS), min_size=1, max_size=5).map("/".join)
filters = st.builds(
    lambda levels, tail, share: ("$share/g/" if share else "") + "/".join(levels + tail),
    st.lists(st.sampled_from([*LEVELS, "+"]), min_size=0, max_size=4),
    st.sampled_from([[], ["#"], ["+"]]),
    st.booleans(),
).filter(lambda f: f not in ("", "$share/g/"))


@settings(max_examples=300, deadline=None)
@given(st.lists(filters, max_size=30), st.lists(topics, min_size=1, max_size=10))
def test_tree_agrees_with_topic_matches(topic_filters: list[str], topic_names: list[str]) -> None:
    tree: TopicTree[str, int] = TopicTree()
    for i, topic_filter in enumerate(topic_filters):
        tree.insert(topic_filter, "k", i)
    unique = set(topic_filters)
    assert len(tree) == len(unique)
    for topic in topic_names:
        got = {f for f, _k, _v in tree.match(topic)}
        assert len(got) == len(tree.match(topic))  # each (filter, key) reported once
        assert got == {f for f in unique if topic_matches(f, topic)}
        assert got == {f for f in unique if reference_match(f, topic)}
    for topic_filter in unique:
        assert tree.remove(topic_filter, "k") is not None
    assert len(tree) == 0
    assert tree._root.is_empty()
