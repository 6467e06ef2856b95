"""Tables of the time-series database (DuckDB).

``series`` maps (product_key, device_key, point_id) to a small integer so that the big ``points``
table holds only numbers: the view ``measurepoints`` shows every point row with its product key,
device key and point id. ``points`` carries no unique index: an index made every append several
times slower, and the single writer keeps (series, event time) unique itself and knows each
series' latest event time (see :mod:`._writer`). Times are epoch milliseconds (BIGINT) so that
bucketing is integer arithmetic; queries convert them to tz-aware UTC timestamps.
"""

from __future__ import annotations

__all__ = ["SCHEMA", "SCHEMA_VERSION"]

# Version 1 also had an ``alerts`` table (alert records now live in ``alerts.sqlite3``, see
# enos_lab.alerts). New databases no longer get it; an existing one keeps it, rows and all, since
# a user may still want them: nothing here drops it, and nothing reads or writes it any more.
# The version stays 1: a database with or without that unused table is read the same way, by
# this version and by older ones (which create the table if it is missing), so no migration
# and no refusal is needed.
SCHEMA_VERSION = 1

_VALUE_COLUMNS = """
    receive_ms BIGINT NOT NULL,
    kind UTINYINT NOT NULL,
    num DOUBLE,
    text VARCHAR,
    quality INTEGER,
    resume BOOLEAN NOT NULL"""

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS series (
    series_id INTEGER PRIMARY KEY,
    product_key VARCHAR NOT NULL,
    device_key VARCHAR NOT NULL,
    point_id VARCHAR NOT NULL,
    UNIQUE (product_key, device_key, point_id));
CREATE TABLE IF NOT EXISTS devices (
    product_key VARCHAR NOT NULL,
    device_key VARCHAR NOT NULL,
    PRIMARY KEY (product_key, device_key));
CREATE TABLE IF NOT EXISTS points (
    series_id INTEGER NOT NULL,
    event_ms BIGINT NOT NULL,{_VALUE_COLUMNS});
CREATE TABLE IF NOT EXISTS rollups (
    series_id INTEGER NOT NULL,
    interval_ms BIGINT NOT NULL,
    bucket_ms BIGINT NOT NULL,
    cnt BIGINT NOT NULL,
    total DOUBLE NOT NULL,
    vmin DOUBLE NOT NULL,
    vmax DOUBLE NOT NULL,
    first_ms BIGINT NOT NULL,
    vfirst DOUBLE NOT NULL,
    last_ms BIGINT NOT NULL,
    vlast DOUBLE NOT NULL,
    PRIMARY KEY (series_id, interval_ms, bucket_ms));
CREATE TABLE IF NOT EXISTS events (
    product_key VARCHAR NOT NULL,
    device_key VARCHAR NOT NULL,
    event_id VARCHAR NOT NULL,
    event_ms BIGINT NOT NULL,
    receive_ms BIGINT NOT NULL,
    severity VARCHAR,
    outputs VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS attributes (
    product_key VARCHAR NOT NULL,
    device_key VARCHAR NOT NULL,
    attribute_id VARCHAR NOT NULL,
    event_ms BIGINT NOT NULL,
    receive_ms BIGINT NOT NULL,
    value VARCHAR);
CREATE OR REPLACE VIEW measurepoints AS
    SELECT s.product_key, s.device_key, s.point_id, p.*
    FROM points p JOIN series s USING (series_id);
INSERT OR IGNORE INTO meta VALUES ('schema_version', '{SCHEMA_VERSION}');
"""
