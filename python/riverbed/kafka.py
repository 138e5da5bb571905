"""Kafka: the same topics, pipelines and consumers as the embedded log, on a Kafka cluster.

``rb.Kafka(bootstrap_servers, **config)`` connects (lazily) to a cluster; ``kafka.topic(name)``
is usable wherever a log topic is: ``Pipeline.read(kafka.topic("t"), group="g")``,
``.write(kafka.topic("out"))``, ``topic.produce``, ``topic.produce_batch`` and
``topic.consumer(group=...).poll()``, which returns the embedded log's columns
(``topic, partition, offset, timestamp, key, value, headers``).

librdkafka does the protocol work (built from source into riverbed's extension); any of its
properties can be passed as keyword arguments, with ``_`` for ``.``
(``security_protocol="SASL_SSL"``) or in ``config={"sasl.mechanism": ...}``.
"""

from __future__ import annotations

import datetime as _dt
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from riverbed import _core, _topic_io
from riverbed._tabular import arrow_input as _arrow_input
from riverbed._units import duration_ms, timeout_s, timestamp_ms
from riverbed.log import _headers, _to_bytes

__all__ = ["Kafka", "KafkaConsumer", "KafkaTopic"]


class Kafka:
    """A Kafka cluster.

    ``timeout``: how long any call (metadata, produce acknowledgement, admin) may take before it
    fails with ``KafkaError`` (seconds or a duration string). ``state_dir``: where named pipelines
    reading or writing this cluster keep their checkpoints (default ``~/.riverbed/state``);
    the processes of one consumer group must share it (one machine, or a shared filesystem).
    ``config`` and keyword arguments: librdkafka properties.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        timeout: object = 10.0,
        state_dir: str | os.PathLike[str] | None = None,
        config: Mapping[str, object] | None = None,
        **properties: object,
    ) -> None:
        if not isinstance(bootstrap_servers, str) or not bootstrap_servers.strip():
            raise ValueError(f"bootstrap_servers must be 'host:port[,host:port...]', got {bootstrap_servers!r}")
        if isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
            secs = timeout_s(timeout, "timeout", no_limit=False)
            ms = round((secs or 0.0) * 1000)
        else:
            ms = duration_ms(timeout, "timeout")
        if ms <= 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        props: dict[str, str] = {}
        for k, v in {**dict(config or {}), **{k.replace("_", "."): v for k, v in properties.items()}}.items():
            props[str(k)] = str(v).lower() if isinstance(v, bool) else str(v)
        self._inner = _core.Kafka(bootstrap_servers, sorted(props.items()), ms)
        self.bootstrap_servers = bootstrap_servers
        self.state_dir = Path(state_dir) if state_dir is not None else Path.home() / ".riverbed" / "state"
        self._mock: Any = None  # a MockKafka creates topics itself (the mock has no admin API)

    def __repr__(self) -> str:
        return f"Kafka({self.bootstrap_servers!r})"

    def topics(self) -> dict[str, int]:
        """Every topic with its partition count."""
        return dict(self._inner.topics())

    def topic(self, name: str) -> KafkaTopic:
        """The topic ``name`` (checked when first used)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"topic name must be a non-empty str, got {name!r}")
        return KafkaTopic(self, name)

    def create_topic(
        self,
        name: str,
        partitions: int = 1,
        replication: int = 1,
        config: Mapping[str, object] | None = None,
    ) -> KafkaTopic:
        """Create a topic through the admin API (``config``: topic configs such as
        ``{"cleanup.policy": "compact"}``); ``KafkaError`` if it exists."""
        if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
            raise ValueError(f"partitions must be a positive int, got {partitions!r}")
        if isinstance(replication, bool) or not isinstance(replication, int) or replication < 1:
            raise ValueError(f"replication must be a positive int, got {replication!r}")
        if self._mock is not None:
            self._mock._create_topic(name, partitions, replication)
            deadline = time.monotonic() + self._inner.timeout_ms / 1000
            while name not in self.topics() and time.monotonic() < deadline:
                time.sleep(0.01)
        else:
            self._inner.create_topic(name, partitions, replication, [(k, str(v)) for k, v in (config or {}).items()])
        return KafkaTopic(self, name)


class KafkaTopic:
    """A topic of a Kafka cluster: produce to it, consume it, read it in a pipeline, write to it."""

    def __init__(self, kafka: Kafka, name: str) -> None:
        self.kafka = kafka
        self.name = name

    def __repr__(self) -> str:
        return f"KafkaTopic({self.name!r} at {self.kafka.bootstrap_servers!r})"

    @property
    def partitions(self) -> int:
        return self.kafka._inner.partitions(self.name)

    def produce(
        self,
        value: object,
        key: object = None,
        timestamp: int | _dt.datetime | None = None,
        headers: Mapping[str, object] | list[tuple[str, object]] | None = None,
        partition: int | None = None,
        *,
        flush: bool = True,
    ) -> None:
        """Write one record (idempotent producer; a keyed record goes to Kafka's murmur2
        partition). ``flush=False`` only queues it: call ``flush()`` to wait for delivery."""
        if partition is not None and (isinstance(partition, bool) or not isinstance(partition, int) or partition < 0):
            raise ValueError(f"partition must be a non-negative int, got {partition!r}")
        ts = None if timestamp is None else timestamp_ms(timestamp)
        self.kafka._inner.produce(self.name, _to_bytes(key, "key"), _to_bytes(value, "value"), ts, _headers(headers), partition)
        if flush:
            self.flush()

    def produce_batch(
        self,
        data: object,
        key: str | None = None,
        value: str | None = None,
        timestamp: str | None = None,
        *,
        index: bool = False,
        non_finite: str = "error",
    ) -> int:
        """Write every row of a pyarrow Table/RecordBatch or pandas/polars DataFrame, as the
        embedded log's ``produce_batch`` does (``value=None``: each row as a JSON object; the
        same rules: ``non_finite="null"`` to write NaN/inf as null instead of refusing them,
        ``index=True`` to write a pandas index), and wait until all are acknowledged. Returns
        the number of records."""
        for field, col in (("key", key), ("value", value), ("timestamp", timestamp)):
            if col is not None and not isinstance(col, str):
                raise TypeError(f"{field} must name a column (str), got {type(col).__name__}")
        if not isinstance(index, bool):
            raise TypeError(f"index must be a bool, got {type(index).__name__}")
        if non_finite not in ("error", "null"):
            raise ValueError(f"non_finite must be 'error' or 'null', got {non_finite!r}")
        n = self.kafka._inner.produce_arrow(self.name, _arrow_input(data, index), key, value, timestamp, non_finite)
        self.flush()
        return int(n)

    def flush(self) -> None:
        """Wait until every queued record is acknowledged; ``KafkaError`` names what was not."""
        self.kafka._inner.flush(self.name)

    def consumer(self, group: str | None = None, start: str = "earliest", auto_commit: bool | None = None) -> KafkaConsumer:
        """A consumer of every partition, or of this member's share when ``group`` is given
        (``start`` applies where the group has no committed offset). ``auto_commit`` (a group's
        consumer only; default True): commit what was polled in the background."""
        if group is not None and not isinstance(group, str):
            raise TypeError(f"group must be str, got {type(group).__name__}")
        if group is None and auto_commit is not None:
            raise ValueError("auto_commit= has no effect without group=: a consumer outside a group commits nothing")
        commit = group is not None and auto_commit is not False  # no group: nothing to commit to
        return KafkaConsumer(self.kafka._inner.consumer(self.name, group, start, commit))

    def read(self, timeout: float = 5.0) -> pa.Table:
        """Every record now in the topic, as a Table: each partition is read up to the end
        offset it has when called. When nothing comes for ``timeout`` seconds, or the client's
        own ``timeout`` if longer, it returns what it has (the last offsets of a partition may
        hold no record: transaction markers, compaction)."""
        wait = timeout_s(timeout, "timeout")  # checked before the consumer is made
        c = self.consumer(start="earliest")
        batches = []
        try:
            ends = {p: hi for p, (lo, hi) in enumerate(c._inner.offsets()) if hi > lo}
            patience = max(wait or 0.0, self.kafka._inner.timeout_ms / 1000)
            quiet_since = time.monotonic()
            first = True  # one poll at least: it gives the columns of an empty result
            while ends or first:
                b = c.poll(100_000, 0.0 if first else 0.2)
                first = False
                if b.num_rows == 0:
                    if time.monotonic() - quiet_since >= patience:
                        break  # the rest of the known offsets hold no record
                    continue
                quiet_since = time.monotonic()
                batches.append(b)
                last = pa.table(b).group_by("partition").aggregate([("offset", "max")])
                for p, o in zip(last["partition"].to_pylist(), last["offset_max"].to_pylist()):
                    if o + 1 >= ends.get(p, 0):
                        ends.pop(p, None)
        finally:
            c.close()
        if not batches:
            return c._empty
        return pa.Table.from_batches(batches)

    @property
    def _riverbed_state_dir(self) -> str:
        """Where a pipeline run of this topic keeps its state (riverbed._topic_io)."""
        return str(self.kafka.state_dir)

    def _riverbed_sink(self, key: str | None) -> _core.Sink:
        """The pipeline sink writing to this topic (``Pipeline.write``)."""
        return self.kafka._inner.sink(self.name, key)

    def _riverbed_source(
        self,
        schema: pa.Schema | None,
        fmt: str,
        batch_size: int | None,
        on_error: str | None,
        dead_letter: object,
        group: str | None,
        start: str,
    ) -> _core.Source:
        """The pipeline source reading this topic (``Pipeline.read``), with ``group`` as one
        member of a consumer group."""
        _topic_io.check_raw_schema(fmt, schema)
        _topic_io.check_read(fmt, schema, on_error, dead_letter)
        dlq: str | None = None
        if on_error == "dead_letter":
            if dead_letter is None:
                dlq = f"{self.name}.dlq"
            elif isinstance(dead_letter, KafkaTopic):
                dlq = dead_letter.name
            else:
                raise TypeError(f"read: dead_letter of a Kafka source must be a KafkaTopic, got {type(dead_letter).__name__}")
        return self.kafka._inner.source(self.name, group, start, fmt, schema, batch_size or 65_536, on_error, dlq)


class KafkaConsumer:
    """Polls a Kafka topic into Arrow batches with the embedded log's columns."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._empty: pa.Table | None = None

    def poll(self, max_records: int = 10_000, timeout: float = 1.0) -> pa.RecordBatch:
        """Up to ``max_records`` records, waiting up to ``timeout`` seconds for the first.

        Columns: ``topic, partition, offset, timestamp, key, value, headers``.
        """
        if isinstance(max_records, bool) or not isinstance(max_records, int) or max_records < 1:
            raise ValueError(f"max_records must be a positive int, got {max_records!r}")
        b = self._inner.poll(max_records, timeout_s(timeout, "timeout"))
        if self._empty is None:
            self._empty = b.schema.empty_table()
        return b

    def commit(self) -> None:
        """Commit what was polled so far (a group consumer)."""
        self._inner.commit()

    def assignment(self) -> list[int]:
        """The partitions assigned to this consumer now."""
        return sorted(self._inner.assignment())

    def close(self) -> None:
        """Commit (a group consumer with auto-commit) and leave."""
        self._inner.close()

    def __enter__(self) -> KafkaConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
