"""The pytest plugin (entry point ``pytest11``: ``riverbed = "riverbed.testing.plugin"``): the
fixtures ``rb_log``, ``rb_driver``, ``rb_broker`` and ``rb_kafka``."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from riverbed.log import Log
from riverbed.testing.driver import TestDriver
from riverbed.testing.mock_kafka import MockKafka

try:
    import pytest
except ImportError:  # pragma: no cover - the driver works without pytest
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture
    def rb_log(tmp_path: Path) -> Iterator[Log]:
        """An ``rb.Log`` in ``tmp_path`` (``fsync="never"``, no background cleaner), closed at
        teardown."""
        lg = Log(tmp_path / "rb_log", fsync="never", cleanup_interval=None)
        try:
            yield lg
        finally:
            lg.close()

    @pytest.fixture
    def rb_driver() -> Iterator[Any]:
        """A factory: ``rb_driver(pipeline, **kwargs)`` returns a ``TestDriver`` that is closed
        (its temporary log deleted) at teardown."""
        drivers: list[TestDriver] = []

        def make(pipeline: object, partitions: int | Mapping[object, int] | None = None, **kwargs: Any) -> TestDriver:
            d = TestDriver(pipeline, partitions, **kwargs)
            drivers.append(d)
            return d

        try:
            yield make
        finally:
            for d in drivers:
                d.close()

    @pytest.fixture
    def rb_broker(tmp_path: Path) -> Iterator[Any]:
        """An ``rb.Server``: a temporary log (``fsync="never"``) served over the Kafka protocol
        on a free loopback port (``rb_broker.bootstrap``; the log is ``rb_broker.log``); new
        groups rebalance at once. Stopped at teardown."""
        from riverbed.server import serve

        server = serve(tmp_path / "rb_broker", "127.0.0.1:0", fsync="never", config={"group.initial.rebalance.delay.ms": 0})
        try:
            yield server
        finally:
            server.stop()

    @pytest.fixture
    def rb_kafka(tmp_path: Path) -> Iterator[Any]:
        """An ``rb.Kafka``: the broker named by ``RIVERBED_KAFKA_BOOTSTRAP`` when set, else a
        fresh ``MockKafka`` (stopped at teardown). Checkpoints go to ``tmp_path``."""
        import os

        from riverbed.kafka import Kafka

        real = os.environ.get("RIVERBED_KAFKA_BOOTSTRAP")
        if real:
            yield Kafka(real, state_dir=tmp_path / "rb_kafka_state")
            return
        mock = MockKafka()
        try:
            yield mock.kafka(state_dir=tmp_path / "rb_kafka_state")
        finally:
            mock.stop()
