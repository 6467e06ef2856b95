"""Group commit, durability across a kill -9, asyncio appends and closing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import duckdb
import pytest

from enos_lab.errors import ClosedError, StoreError
from enos_lab.store import EventRow, PointRow, TimeSeriesStore
from enos_lab.store._writer import Job

T0 = 1_700_000_000_000


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TimeSeriesStore]:
    with TimeSeriesStore(tmp_path / "data") as opened:
        yield opened


def test_many_concurrent_appends_are_all_committed(store: TimeSeriesStore) -> None:
    threads, calls, size = 8, 25, 40
    results: list[int] = []
    barrier = threading.Barrier(threads)

    def work(t: int) -> None:
        barrier.wait()
        for c in range(calls):
            rows = [
                PointRow("P", f"d{t}", "v", T0 + (c * size + i) * 10, float(i)) for i in range(size)
            ]
            results.append(store.append_points(rows))

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert results == [size] * (threads * calls)
    assert len(store.query_points([f"d{t}" for t in range(threads)])) == threads * calls * size
    stats = store.stats()
    assert stats.rows == stats.batches * size == threads * calls * size
    assert stats.commits <= stats.batches


def test_batches_queued_during_a_commit_share_one_transaction(store: TimeSeriesStore) -> None:
    # Hold the writer inside a transaction, queue batches from several threads, then release:
    # they must all go out in a single group commit, and none may return before it.
    entered, release = threading.Event(), threading.Event()

    def hold(con: duckdb.DuckDBPyConnection) -> None:
        entered.set()
        release.wait(10)

    job: Job = Job(hold, Future())
    store._writer.submit(job)
    assert entered.wait(10)
    before = store.stats()
    futures = [store.submit_points([PointRow("P", f"d{i}", "v", T0, float(i))]) for i in range(6)]
    assert not any(f.done() for f in futures)
    assert store.stats().queued == 6
    release.set()
    assert [f.result(10) for f in futures] == [1] * 6
    after = store.stats()
    assert after.commits - before.commits == 2  # the job's transaction and one group
    assert after.max_group == 6


def test_append_returns_only_after_commit_visible_to_another_connection(
    store: TimeSeriesStore,
) -> None:
    for i in range(20):
        store.append_points([PointRow("P", "d1", "v", T0 + i, float(i))])
        # A separate connection (reader cursor) sees the row as soon as append returned.
        assert len(store.query_points("d1", "v")) == i + 1
        assert store.latest("d1")["value"].tolist() == [float(i)]


def test_async_appends_do_not_block_the_loop(store: TimeSeriesStore) -> None:
    async def main() -> tuple[list[int], int]:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0)

        tick_task = asyncio.create_task(ticker())
        counts = await asyncio.gather(
            *(
                store.append_points_async(
                    [PointRow("P", f"d{k}", "v", T0 + i, float(i)) for i in range(100)]
                )
                for k in range(20)
            ),
            store.append_events_async([EventRow("P", "d0", "alarm", T0, {"code": 1})]),
        )
        stop.set()
        await tick_task
        return list(counts), ticks

    counts, ticks = asyncio.run(main())
    assert counts == [100] * 20 + [1]
    assert ticks > 0
    assert len(store.latest()) == 20


def test_async_queries(store: TimeSeriesStore) -> None:
    store.append_points([PointRow("P", "d1", "v", T0 + i * 1000, float(i)) for i in range(120)])
    store.append_events([EventRow("P", "d1", "boot", T0, {})])

    async def main() -> list[int]:
        frames = await asyncio.gather(
            store.query_points_async("d1", "v"),
            store.latest_async("d1"),
            store.aggregate_async("d1", "v", interval="1min", aggregations="count"),
            store.query_events_async(),
            store.query_attributes_async(),
        )
        report = await store.apply_retention_async()
        assert report.deleted_rows == 0
        return [len(f) for f in frames]

    assert asyncio.run(main()) == [120, 1, 3, 1, 0]


def test_rows_keep_their_keys_and_times_on_disk(tmp_path: Path) -> None:
    with TimeSeriesStore(tmp_path) as store:
        store.append_points([PointRow("P", "d1", "v", T0, 1.5, 9, True)])
    con = duckdb.connect(str(tmp_path / "timeseries.duckdb"), read_only=True)
    try:
        rows = con.execute(
            "SELECT product_key, device_key, point_id, event_ms, receive_ms > 0, num, quality,"
            " resume FROM measurepoints"
        ).fetchall()
    finally:
        con.close()
    assert rows == [("P", "d1", "v", T0, True, 1.5, 9, True)]


def test_closed_store_refuses_appends_and_queries(tmp_path: Path) -> None:
    store = TimeSeriesStore(tmp_path)
    store.append_points([PointRow("P", "d1", "v", T0, 1.0)])
    store.close()
    store.close()  # idempotent
    with pytest.raises(ClosedError):
        store.append_points([PointRow("P", "d1", "v", T0, 1.0)])
    with pytest.raises(StoreError):
        store.latest()


def test_temporary_directory_is_removed_on_close() -> None:
    store = TimeSeriesStore()
    store.append_points([PointRow("P", "d1", "v", T0, 1.0)])
    directory = store.path.parent
    assert store.path.exists()
    store.close()
    assert not directory.exists()


def test_second_writer_process_is_refused_with_store_error(tmp_path: Path) -> None:
    with TimeSeriesStore(tmp_path):
        code = textwrap.dedent(
            f"""
            from enos_lab.errors import StoreError
            from enos_lab.store import TimeSeriesStore
            try:
                TimeSeriesStore({str(tmp_path)!r})
            except StoreError as exc:
                print("refused", type(exc).__name__)
            """
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
        )
        assert out.stdout.strip() == "refused StoreError"


CHILD = """
import sys
from enos_lab.store import PointRow, TimeSeriesStore

store = TimeSeriesStore(sys.argv[1])
batch, n = 50, 0
while True:
    rows = [PointRow("P", "dev" + str(j % 7), "v", {t0} + n + j, float(n + j), None, False)
            for j in range(batch)]
    store.append_points(rows)
    n += batch
    print(n, flush=True)
"""


def test_every_reported_commit_survives_kill_9(tmp_path: Path) -> None:
    data = tmp_path / "data"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(t0=T0), str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    reported = 0
    try:
        for line in child.stdout:
            reported = int(line)
            if reported >= 3000:
                break
        os.kill(child.pid, signal.SIGKILL)  # while it keeps appending
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
        rest, err = child.communicate(timeout=60)
    for line in rest.splitlines():  # lines printed before the kill landed
        reported = int(line)
    assert child.returncode == -signal.SIGKILL, err
    assert reported >= 3000
    with TimeSeriesStore(data) as store:
        frame = store.query_points([f"dev{k}" for k in range(7)], "v")
        committed = set(frame["value"].astype(int))
        assert set(range(reported)) <= committed
        assert len(frame) == len(committed) >= reported


def test_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    with TimeSeriesStore(tmp_path):
        pass
    con = duckdb.connect(str(tmp_path / "timeseries.duckdb"))
    con.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    con.close()
    with pytest.raises(StoreError, match="schema version 999"):
        TimeSeriesStore(tmp_path)


def _tables(path: Path) -> set[str]:
    con = duckdb.connect(str(path / "timeseries.duckdb"), read_only=True)
    try:
        return {
            name for (name,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()
        }
    finally:
        con.close()


def test_a_new_store_has_no_alerts_table_and_an_old_one_keeps_its_alerts(
    tmp_path: Path,
) -> None:
    with TimeSeriesStore(tmp_path / "new"):
        pass
    tables = {"meta", "series", "devices", "points", "rollups", "events", "attributes"}
    assert _tables(tmp_path / "new") == tables
    # A database made before alert records moved out of the store: same schema version, plus
    # an ``alerts`` table whose rows are the user's and stay where they are.
    old = tmp_path / "old"
    with TimeSeriesStore(old):
        pass
    con = duckdb.connect(str(old / "timeseries.duckdb"))
    con.execute("CREATE TABLE alerts (alert_id VARCHAR PRIMARY KEY, message VARCHAR NOT NULL)")
    con.execute("INSERT INTO alerts VALUES ('a-1', 'temp above 5')")
    con.close()
    with TimeSeriesStore(old) as store:
        store.append_points([PointRow("P", "d1", "v", T0, 1.0)])
        assert len(store.query_points("d1")) == 1
    assert _tables(old) == tables | {"alerts"}
    con = duckdb.connect(str(old / "timeseries.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT * FROM alerts").fetchall() == [("a-1", "temp above 5")]
    finally:
        con.close()
