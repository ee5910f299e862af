"""InfluxDB 2.x/3.x/Cloud: writes through influxdb-client's batching WriteApi, reads with InfluxQL."""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
import warnings
from collections.abc import Sequence
from typing import Any

from collector.errors import ConfigError, StoreError, StoreRejected, StoreUnavailable
from collector.schema import Point
from collector.store.influx_http import TOKEN_ENV, HttpClient, _reason, error_text, raise_for_status
from collector.store.influx_rollups import check_duration, duration_s
from collector.store.influx_url import _V2_PARAMS
from collector.store.influx_v1 import InfluxStore

log = logging.getLogger("wattlens.store.influx")
_NS: Any = "ns"  # influxdb_client.WritePrecision.NS


# --- the v2 store ------------------------------------------------------------------


def _import_influxdb_client() -> None:
    """Import influxdb-client once, muting urllib3's import-time notice about its old
    ``[secure]`` extra (emitted when ``urllib3_secure_extra`` is installed; not ours to fix)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*urllib3\\[secure\\]",
                                category=DeprecationWarning)
        import influxdb_client  # noqa: F401


class Influx2Store(InfluxStore):
    """InfluxDB 2.x/3.x/Cloud: writes through influxdb-client's batching WriteApi, reads with InfluxQL.

    The WriteApi batches on its own thread (``batch_size`` points or
    ``flush_interval_ms``, gzip on), so ``write`` returns at once and a failure
    is only known later: a batch that failed for a transient reason is kept
    (bounded) and handed to the spool by :meth:`take_failed`; a rejected batch
    is logged and counted. The client's own retries are off: retrying is the
    spool's job, with backoff and a bound. :meth:`write_lines` writes
    synchronously, for the spool's replay. Reads use the v1-compatible
    ``/query`` with the token, which 2.x (DBRP mapping) and 3.x serve.
    """

    kind = "InfluxDB v2"
    rollup_layout = "measurement"  # no retention policies or continuous queries: NAME_1m, NAME_1h
    pipelined_lines = False  # writes go through the batching WriteApi; write_lines is for replay
    failed_max_bytes = 64 * 1024 * 1024

    def __init__(self, url: str) -> None:
        super().__init__(url, known_params=_V2_PARAMS)
        _import_influxdb_client()
        from influxdb_client import InfluxDBClient, WriteOptions
        from influxdb_client.client.write_api import SYNCHRONOUS
        from reactivex.scheduler import ThreadPoolScheduler

        org = self.parsed.params.get("org") or None
        if org is None:
            raise ConfigError(f"--store: {self.url!r} needs ?org=ORG (the InfluxDB organization)")
        self.org: str = org
        self.bucket = self.database
        self.flush_interval_ms = int(self.parsed.number("flush_interval_ms", 1000.0))
        self.gzip = self.parsed.flag("gzip", "on") != "off"
        self._token = os.environ.get(TOKEN_ENV) or ""
        if not self._token:
            log.warning("%s is not set: writing to %s without a token", TOKEN_ENV, self.url)
        self._http = HttpClient(self.parsed.base_url, display=self.url, timeout_s=self.timeout_s,
                                headers={"Authorization": f"Token {self._token}"}
                                if self._token else {})
        self._client = InfluxDBClient(url=self.parsed.base_url, token=self._token, org=self.org,
                                      timeout=int(self.timeout_s * 1000), enable_gzip=self.gzip)
        options = WriteOptions(
            batch_size=self.batch_size, flush_interval=self.flush_interval_ms, max_retries=0,
            max_close_wait=int(max(self.timeout_s * 2, 5.0) * 1000),
            write_scheduler=ThreadPoolScheduler(max_workers=1))
        self._failed: collections.deque[bytes] = collections.deque()
        self._failed_bytes = 0
        self._failed_lock = threading.Lock()
        self.points_failed_dropped = 0
        self._batch = self._client.write_api(
            write_options=options, success_callback=self._on_success,
            error_callback=self._on_error)
        self._sync = self._client.write_api(write_options=SYNCHRONOUS)

    def _auth_headers(self) -> dict[str, str]:
        return {}

    def write(self, points: Sequence[Point]) -> None:
        self.forget_bounds()  # time_range's remembered points (influx_v1)
        lines = self.lines(points)
        if lines:
            # One record per line, so the WriteApi's batch_size counts points.
            self._batch.write(self.bucket, self.org, record=lines, write_precision=_NS)

    def write_lines(self, body: bytes) -> None:
        self.forget_bounds()
        try:
            self._sync.write(self.bucket, self.org, record=body, write_precision=_NS)
        except Exception as exc:
            raise self._translate(exc) from None
        self.last_good_write_wall_s = time.time()

    def _translate(self, exc: BaseException) -> StoreError:
        status = getattr(exc, "status", None)
        if isinstance(status, int) and status > 0:
            body = getattr(exc, "body", None) or b""
            message = getattr(exc, "message", None) or error_text(
                body if isinstance(body, bytes) else str(body).encode())
            try:
                raise_for_status(status, str(message).encode(), what=f"write to {self.bucket!r}",
                                 display=self.url)
            except StoreError as mapped:
                return mapped
        return StoreUnavailable(f"write to {self.bucket!r}: cannot reach InfluxDB at {self.url}: "
                                f"{_reason(exc, self.timeout_s)}")

    def _on_success(self, _conf: tuple[str, str, str], _data: Any) -> None:
        self.last_good_write_wall_s = time.time()
        self.forget_bounds()  # the batch landed: its points may precede the first

    def _on_error(self, _conf: tuple[str, str, str], data: Any, exc: Exception) -> None:
        body = data if isinstance(data, bytes) else str(data).encode()
        error = self._translate(exc)
        if isinstance(error, StoreRejected):
            n = body.count(b"\n") + 1
            self.points_rejected += n
            self._warn.warning("batch", f"{error}; {n} points dropped")
            return
        self._warn.warning("batch", f"{error}; the batch is kept for the spool")
        with self._failed_lock:
            self._failed.append(body)
            self._failed_bytes += len(body)
            while self._failed_bytes > self.failed_max_bytes and self._failed:
                old = self._failed.popleft()
                self._failed_bytes -= len(old)
                self.points_failed_dropped += old.count(b"\n") + 1

    def take_failed(self) -> list[bytes]:
        """Bodies of line protocol whose batch failed transiently since the last call (oldest first)."""
        with self._failed_lock:
            out, self._failed = list(self._failed), collections.deque()
            self._failed_bytes = 0
        return out

    def flush(self) -> None:
        """Write what the WriteApi holds now (closes and reopens its batching pipeline)."""
        from influxdb_client import WriteOptions
        from reactivex.scheduler import ThreadPoolScheduler

        old = self._batch
        options = WriteOptions(
            batch_size=self.batch_size, flush_interval=self.flush_interval_ms, max_retries=0,
            max_close_wait=int(max(self.timeout_s * 2, 5.0) * 1000),
            write_scheduler=ThreadPoolScheduler(max_workers=1))
        self._batch = self._client.write_api(
            write_options=options, success_callback=self._on_success,
            error_callback=self._on_error)
        old.close()

    def flush_writes(self) -> None:
        self.flush()

    def close(self) -> None:
        self._batch.close()  # flushes what is batched, bounded by max_close_wait
        self._sync.close()
        self._client.close()
        super().close()

    def init(self, *, raw_retention: str = "30d", rollup_1m_retention: str = "90d",
             rollup_1h_retention: str = "INF", rollups: bool = True) -> list[str]:
        """Create the bucket if the server has the v2 bucket API; rollups are documented, not made.

        InfluxDB 2.x downsamples with tasks (Flux) and 3.x with its processing
        engine; see docs/influxdb.md for both.
        """
        check_duration("--raw-retention", raw_retention)
        done: list[str] = []
        try:
            from influxdb_client.domain.bucket_retention_rules import BucketRetentionRules

            buckets = self._client.buckets_api()
            if buckets.find_bucket_by_name(self.bucket) is not None:
                done.append(f"bucket {self.bucket!r}: exists")
            else:
                seconds = 0 if raw_retention == "INF" else duration_s(raw_retention)
                rules = BucketRetentionRules(type="expire", every_seconds=seconds)
                buckets.create_bucket(bucket_name=self.bucket, org=self.org,
                                      retention_rules=rules)
                done.append(f"bucket {self.bucket!r}: created, retention {raw_retention}")
        except Exception as exc:
            error = self._translate(exc)
            if "404" in str(error) or "405" in str(error) or "400" in str(error):
                done.append(f"bucket {self.bucket!r}: this server has no v2 bucket API; "
                            f"create the bucket with its own tools")
            else:
                raise error from None
        if rollups:
            done.append("rollups: on InfluxDB 2.x/3.x set them up as in docs/influxdb.md")
        return done
