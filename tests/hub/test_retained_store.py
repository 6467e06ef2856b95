"""The retained-message store: storing, replacing and deleting, bounds per owner and in total,
message expiry, the ``$`` rule, pruning, cost of a narrow lookup, and agreement of its filter
walk with :func:`~enos_lab.mqtt.topic_matches` (MQTT 3.3.1.3, 3.3.2.3.3, 4.7)."""

from __future__ import annotations

import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enos_lab.errors import InvalidArgument
from enos_lab.hub import Message
from enos_lab.hub._retained import RetainedStore
from enos_lab.mqtt import Properties, topic_matches

LARGE = 1 << 40


def make_store(
    max_messages: int = LARGE,
    max_bytes: int = LARGE,
    max_messages_per_owner: int = LARGE,
    max_bytes_per_owner: int = LARGE,
) -> RetainedStore:
    return RetainedStore(
        max_messages=max_messages,
        max_bytes=max_bytes,
        max_messages_per_owner=max_messages_per_owner,
        max_bytes_per_owner=max_bytes_per_owner,
    )


def msg(topic: str, payload: bytes = b"v", expiry: int | None = None) -> Message:
    props = Properties(message_expiry_interval=expiry)
    return Message(topic, payload, qos=1, retain=True, properties=props)


def topics_of(store: RetainedStore, topic_filter: str, now: float = 0.0) -> set[str]:
    return {m.topic for m, _at in store.matching(topic_filter, now)}


# -- store / replace / delete ----------------------------------------------------------------


def test_store_then_match_returns_message_and_time_stored() -> None:
    store = make_store()
    message = msg("site/température", b"21.5")
    assert store.store(message, "dev1", 5.0) is True
    assert store.matching("site/température", 9.0) == [(message, 5.0)]
    assert len(store) == 1
    # size = payload + topic in UTF-8 (the 'é' takes 2 bytes)
    size = 4 + len("site/température".encode())
    assert size == 4 + 17
    assert store.bytes == size
    assert store.owner_usage("dev1") == (1, size)
    assert store.owner_usage("nobody") == (0, 0)


def test_replace_keeps_one_message_per_topic_and_counts_new_size() -> None:
    store = make_store()
    store.store(msg("a/b", b"old-value"), "dev1", 1.0)
    new = msg("a/b", b"new")
    assert store.store(new, "dev1", 2.0) is True
    assert store.matching("a/b", 3.0) == [(new, 2.0)]
    assert len(store) == 1
    assert store.bytes == 3 + 3
    assert store.owner_usage("dev1") == (1, 6)


def test_empty_payload_removes_the_retained_message() -> None:
    """MQTT-3.3.1-10: a retained PUBLISH with an empty payload removes the retained message."""
    store = make_store()
    store.store(msg("a/b/c"), "dev1", 1.0)
    store.store(msg("a/x"), "dev2", 1.0)
    assert store.store(msg("a/b/c", b""), "dev2", 2.0) is True
    assert topics_of(store, "#") == {"a/x"}
    assert (len(store), store.bytes) == (1, 1 + 3)
    assert store.owner_usage("dev1") == (0, 0)
    assert store.owners == 1
    assert store.nodes == 2  # a, a/x: the b/c branch is pruned
    # an empty payload for a topic without retained message changes nothing
    assert store.store(msg("never/stored", b""), "dev1", 3.0) is True
    assert (len(store), store.nodes, store.owners) == (1, 2, 1)


def test_remove_of_unknown_topic_or_bare_prefix_is_a_no_op() -> None:
    store = make_store()
    store.store(msg("a/b/c"), "dev1", 1.0)
    store.remove("a/b")  # a prefix, not a retained topic
    store.remove("zz")
    store.remove("a/b/c/d")
    assert topics_of(store, "#") == {"a/b/c"}
    assert store.nodes == 3
    store.remove("a/b/c")
    assert (len(store), store.bytes, store.nodes, store.owners) == (0, 0, 0, 0)


@pytest.mark.parametrize(
    "field", ["max_messages", "max_bytes", "max_messages_per_owner", "max_bytes_per_owner"]
)
@pytest.mark.parametrize("value", [0, -1, 1.5, True, "10", None])
def test_bounds_must_be_positive_ints(field: str, value: object) -> None:
    kwargs: dict[str, object] = {
        "max_messages": 1,
        "max_bytes": 1,
        "max_messages_per_owner": 1,
        "max_bytes_per_owner": 1,
    }
    kwargs[field] = value
    with pytest.raises(InvalidArgument, match=f"{field} must be an int > 0, got {value!r}"):
        RetainedStore(**kwargs)  # type: ignore[arg-type]


# -- bounds ----------------------------------------------------------------------------------


def test_per_owner_message_bound() -> None:
    store = make_store(max_messages_per_owner=2)
    assert store.store(msg("d1/a", b"1"), "d1", 0.0)
    assert store.store(msg("d1/b", b"1"), "d1", 0.0)
    assert store.store(msg("d1/c", b"1"), "d1", 0.0) is False
    assert topics_of(store, "#") == {"d1/a", "d1/b"}
    assert store.owner_usage("d1") == (2, 10)
    assert store.nodes == 3  # nothing was created for the refused topic
    # replacing one of its own topics is not a new message: accepted at the bound
    replacement = msg("d1/a", b"22")
    assert store.store(replacement, "d1", 1.0)
    assert store.matching("d1/a", 1.0) == [(replacement, 1.0)]
    # other owners and the hub have their own budgets
    assert store.store(msg("d2/a"), "d2", 0.0)
    assert store.store(msg("hub/a"), None, 0.0)
    assert len(store) == 4


def test_per_owner_byte_bound_refusal_leaves_the_old_message() -> None:
    store = make_store(max_bytes_per_owner=20)
    old = msg("d1/t", b"x" * 10)  # 10 + 4 = 14 bytes
    assert store.store(old, "d1", 0.0)
    assert store.store(msg("d1/u", b"x" * 3), "d1", 0.0) is False  # 14 + 7 > 20
    # a replacement counts the new size minus the old: 20 - 4 = 16 payload bytes fit, 17 do not
    assert store.store(msg("d1/t", b"y" * 17), "d1", 1.0) is False
    assert store.matching("d1/t", 1.0) == [(old, 0.0)]
    assert store.owner_usage("d1") == (1, 14)
    exact = msg("d1/t", b"y" * 16)
    assert store.store(exact, "d1", 2.0)
    assert store.matching("d1/t", 2.0) == [(exact, 2.0)]
    assert store.owner_usage("d1") == (1, 20)
    assert store.bytes == 20


def test_total_bounds_apply_to_every_owner_and_to_the_hub() -> None:
    store = make_store(max_messages=3, max_bytes=LARGE)
    assert store.store(msg("a"), "d1", 0.0)
    assert store.store(msg("b"), "d2", 0.0)
    assert store.store(msg("c"), None, 0.0)
    assert store.store(msg("d"), None, 0.0) is False
    assert store.store(msg("d"), "d3", 0.0) is False
    assert store.store(msg("c", b"new"), None, 1.0)  # a replacement adds no message
    assert topics_of(store, "#") == {"a", "b", "c"}
    assert store.owners == 2  # the hub (owner None) is not an owner

    store = make_store(max_bytes=10)
    assert store.store(msg("a", b"x" * 4), None, 0.0)  # 5 bytes
    assert store.store(msg("b", b"x" * 4), "d1", 0.0)  # 10 bytes
    assert store.store(msg("c", b"x"), "d2", 0.0) is False
    assert store.store(msg("a", b"x" * 5), None, 0.0) is False  # + 6 - 5 > 10
    assert store.store(msg("a", b"y" * 4), "d2", 1.0)  # + 5 - 5: fits, moves "a" to d2
    assert store.bytes == 10
    assert store.owner_usage("d2") == (1, 5)


def test_replacement_moves_the_topic_to_the_new_owner() -> None:
    store = make_store(max_messages_per_owner=1)
    assert store.store(msg("shared/t", b"from-1"), "d1", 0.0)
    assert store.store(msg("d2/own"), "d2", 0.0)
    # d2 is at its bound: taking over d1's topic would be a second message of d2
    assert store.store(msg("shared/t", b"from-2"), "d2", 1.0) is False
    assert store.owner_usage("d1") == (1, 6 + 8)
    store.remove("d2/own")
    assert store.owners == 1
    assert store.store(msg("shared/t", b"from-2"), "d2", 2.0)
    assert store.owner_usage("d1") == (0, 0)
    assert store.owner_usage("d2") == (1, 6 + 8)
    assert store.owners == 1  # d1 forgotten
    # d1 has its budget back
    assert store.store(msg("d1/new"), "d1", 3.0)
    # the hub taking the topic over frees d2's budget
    assert store.store(msg("shared/t", b"hub"), None, 4.0)
    assert store.owner_usage("d2") == (0, 0)
    assert store.owners == 1


def test_owners_are_forgotten_when_their_usage_drops_to_zero() -> None:
    store = make_store()
    for d in range(200):
        for p in range(3):
            store.store(msg(f"dev{d}/p{p}", b"v"), f"dev{d}", 0.0)
    assert store.owners == 200
    for d in range(200):
        store.store(msg(f"dev{d}/p0", b""), f"dev{d}", 1.0)  # empty payload
        store.remove(f"dev{d}/p1")
        store.store(msg(f"dev{d}/p2", b"hub"), None, 1.0)  # taken over by the hub
    assert store.owners == 0
    assert all(store.owner_usage(f"dev{d}") == (0, 0) for d in range(200))
    assert len(store) == 200
    assert store.bytes == sum(3 + len(f"dev{d}/p2") for d in range(200))


# -- expiry ----------------------------------------------------------------------------------


def test_expired_messages_are_removed_on_matching() -> None:
    """MQTT-3.3.2-5: once its Message Expiry Interval has passed, a retained message is not
    delivered any more (and the store forgets it)."""
    store = make_store()
    short = msg("r/short", expiry=10)
    forever = msg("r/forever")
    store.store(short, "d1", 100.0)
    store.store(forever, "d1", 100.0)
    assert sorted(store.matching("r/+", 109.9), key=lambda x: x[0].topic) == [
        (forever, 100.0),
        (short, 100.0),
    ]
    assert store.matching("r/+", 110.0) == [(forever, 100.0)]
    assert len(store) == 1
    assert store.owner_usage("d1") == (1, 1 + len("r/forever"))
    assert store.nodes == 2


def test_expired_messages_free_their_budget_and_replaced_ones_do_not_expire() -> None:
    store = make_store(max_messages_per_owner=1)
    assert store.store(msg("d1/a", expiry=5), "d1", 0.0)
    assert store.store(msg("d1/b"), "d1", 4.0) is False
    assert store.store(msg("d1/b"), "d1", 5.0)  # d1/a has expired
    assert topics_of(store, "#", 5.0) == {"d1/b"}
    # a message replaced before its expiry: the replacement does not expire with it
    store = make_store()
    store.store(msg("t", b"1", expiry=5), "d1", 0.0)
    keeper = msg("t", b"2")
    store.store(keeper, "d1", 1.0)
    assert store.matching("t", 100.0) == [(keeper, 1.0)]
    # removed, then stored again without expiry
    store.store(msg("u", b"1", expiry=5), "d1", 0.0)
    store.remove("u")
    store.store(msg("u", b"2"), "d1", 1.0)
    assert topics_of(store, "#", 100.0) == {"t", "u"}


def test_replacing_an_expiring_message_many_times_keeps_memory_bounded() -> None:
    """A client that keeps replacing a retained message with a long expiry interval must not make
    the store hold every replaced message until its expiry."""
    store = make_store()
    for i in range(200):
        store.store(msg("t", str(i).encode(), expiry=3600), "d1", float(i))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(20_000):
            store.store(msg("t", str(i).encode(), expiry=3600), "d1", float(i))
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(store) == 1
    assert grown < 100_000  # without compaction: about 20,000 x 300 bytes


# -- the '$' rule and explicit matches -------------------------------------------------------

TOPICS = [
    "a",
    "a/b",
    "a/b/c",
    "a/",
    "/",
    "/a",
    "a//c",
    "a/$x",
    "$SYS",
    "$SYS/broker/load",
    "$x/b",
    "b/c",
]

CASES = [
    ("#", {"a", "a/b", "a/b/c", "a/", "/", "/a", "a//c", "a/$x", "b/c"}),
    ("+", {"a"}),
    ("+/+", {"a/b", "a/", "/", "/a", "a/$x", "b/c"}),
    ("+/b", {"a/b"}),
    ("+/#", {"a", "a/b", "a/b/c", "a/", "/", "/a", "a//c", "a/$x", "b/c"}),
    ("a/#", {"a", "a/b", "a/b/c", "a/", "a//c", "a/$x"}),
    ("a/+", {"a/b", "a/", "a/$x"}),
    ("a/+/c", {"a/b/c", "a//c"}),
    ("a/", {"a/"}),
    ("/+", {"/", "/a"}),
    ("+/", {"a/", "/"}),
    ("$SYS/#", {"$SYS", "$SYS/broker/load"}),
    ("$SYS/+/load", {"$SYS/broker/load"}),
    ("$x/+", {"$x/b"}),
    ("+/$x", {"a/$x"}),
    ("$x/#", {"$x/b"}),
    ("a/b/c/#", {"a/b/c"}),
    ("a/b/c/+", set()),
    ("zz/#", set()),
]


@pytest.mark.parametrize(("topic_filter", "expected"), CASES)
def test_explicit_matches_agree_with_topic_matches(topic_filter: str, expected: set[str]) -> None:
    """MQTT 4.7.1: '+' one level (an empty one too), '#' the parent and everything below;
    MQTT-4.7.2-1: a leading wildcard does not match a topic starting with '$'."""
    store = make_store()
    for topic in TOPICS:
        store.store(msg(topic), None, 0.0)
    assert topics_of(store, topic_filter) == expected
    assert expected == {t for t in TOPICS if topic_matches(topic_filter, t)}


# -- pruning and cost ------------------------------------------------------------------------


def test_topics_that_come_and_go_leave_no_nodes() -> None:
    store = make_store()
    store.store(msg("keep/x"), "d0", 0.0)
    base = store.nodes
    for round_ in range(3):
        for d in range(300):
            store.store(msg(f"dev{d}/mp/{round_}/v", expiry=1), f"dev{d}", float(round_ * 10))
        store.store(msg(f"dev0/mp/{round_}/v", b""), "dev0", float(round_ * 10))
        for d in range(1, 150):
            store.remove(f"dev{d}/mp/{round_}/v")
        assert store.nodes > base
        # the rest expire: found by a subscription after their expiry
        assert topics_of(store, "#", float(round_ * 10 + 5)) == {"keep/x"}
        assert (store.nodes, len(store), store.owners) == (base, 1, 1)


def test_narrow_filter_visits_only_its_subtree_among_50000_topics() -> None:
    """A SUBSCRIBE to one device's topics costs what that device has retained, not what all
    devices have (the defect: every SUBSCRIBE scanned every retained message)."""
    store = make_store()
    devices, points = 10_000, 5
    for d in range(devices):
        for p in range(points):
            store.store(msg(f"dev{d:05d}/mp/p{p}", b"1.0"), f"dev{d:05d}", 0.0)
    assert len(store) == 50_000
    for topic_filter in ("dev01234/#", "dev01234/+/+", "dev01234/mp/+", "dev01234/mp/p3"):
        before = store.nodes_visited
        got = topics_of(store, topic_filter)
        visited = store.nodes_visited - before
        mine = [f"dev01234/mp/p{p}" for p in range(points)]
        assert got == {t for t in mine if topic_matches(topic_filter, t)}
        assert got
        assert visited <= 3 + points  # root, device, "mp", the points
    # a filter that matches every device visits every device: the cost follows the match
    before = store.nodes_visited
    assert len(topics_of(store, "+/mp/p0")) == devices
    assert store.nodes_visited - before == 1 + 3 * devices


# -- property: the walk agrees with the one matching rule -----------------------------------

LEVELS = ["a", "b", "", "$x", "$SYS"]
topic_names = st.lists(st.sampled_from(LEVELS), min_size=1, max_size=5).map("/".join)
topic_filters = st.builds(
    lambda levels, tail: "/".join(levels + tail),
    st.lists(st.sampled_from([*LEVELS, "+"]), min_size=0, max_size=4),
    st.sampled_from([[], ["#"], ["+"]]),
).filter(bool)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(topic_names, max_size=30),
    st.lists(topic_filters, min_size=1, max_size=10),
    st.data(),
)
def test_matching_agrees_with_topic_matches(
    names: list[str], filters: list[str], data: st.DataObject
) -> None:
    store = make_store()
    for name in names:
        assert store.store(msg(name, name.encode() or b"-"), name[:1], 0.0)
    kept = set(names)
    assert len(store) == len(kept)
    for topic_filter in filters:
        got = store.matching(topic_filter, 0.0)
        assert len(got) == len({m.topic for m, _at in got})  # each topic once
        assert {m.topic for m, _at in got} == {t for t in kept if topic_matches(topic_filter, t)}
    gone = data.draw(st.sets(st.sampled_from(sorted(kept))) if kept else st.just(set[str]()))
    for name in gone:
        store.remove(name)
    kept -= gone
    for topic_filter in filters:
        assert topics_of(store, topic_filter) == {t for t in kept if topic_matches(topic_filter, t)}
    for name in kept:
        store.remove(name)
    assert (len(store), store.bytes, store.nodes, store.owners) == (0, 0, 0, 0)


# -- property: the accounting agrees with a plain model of the bounds ------------------------

OWNERS = ["d1", "d2", "d3", None]
operations = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "a/b", "c/d/e", "é"]),
        st.sampled_from(OWNERS),
        st.integers(min_value=0, max_value=12),  # payload size; 0 deletes
        st.booleans(),  # remove() instead of store()
    ),
    max_size=60,
)


def within_bounds(state: dict[str, tuple[str | None, int]]) -> bool:
    """The bounds of the store below stated on a whole state: topic -> (owner, size)."""
    if len(state) > 4 or sum(size for _o, size in state.values()) > 40:
        return False
    for owner in OWNERS[:3]:
        sizes = [size for o, size in state.values() if o == owner]
        if len(sizes) > 2 or sum(sizes) > 15:
            return False
    return True


@settings(max_examples=300, deadline=None)
@given(operations)
def test_accounting_agrees_with_a_model(ops: list[tuple[str, str | None, int, bool]]) -> None:
    store = make_store(4, 40, 2, 15)
    model: dict[str, tuple[str | None, int]] = {}
    for topic, owner, payload_size, remove in ops:
        if remove:
            store.remove(topic)
            model.pop(topic, None)
        elif payload_size == 0:
            assert store.store(msg(topic, b""), owner, 0.0) is True
            model.pop(topic, None)
        else:
            after = {**model, topic: (owner, payload_size + len(topic.encode()))}
            accepted = within_bounds(after)
            assert store.store(msg(topic, b"x" * payload_size), owner, 0.0) is accepted
            if accepted:
                model = after
        assert len(store) == len(model)
        assert store.bytes == sum(size for _o, size in model.values())
        for o in OWNERS[:3]:
            sizes = [size for mo, size in model.values() if mo == o]
            assert store.owner_usage(o) == (len(sizes), sum(sizes))
        assert store.owners == len({o for o, _s in model.values() if o is not None})
        assert topics_of(store, "#") == set(model)
