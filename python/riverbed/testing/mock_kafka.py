"""``MockKafka``: librdkafka's mock cluster, real Kafka-protocol brokers inside this process."""

from __future__ import annotations

from typing import Any

from riverbed import _core

__all__ = ["MockKafka"]


class MockKafka:
    """librdkafka's mock cluster: real Kafka-protocol brokers on loopback, inside this process,
    for tests (any Kafka client can connect to ``bootstrap_servers``: riverbed, confluent-kafka,
    kafka-python). It keeps everything in memory and lives until ``stop()`` or exit.

    The mock has no admin API: ``kafka().create_topic`` creates topics on the mock directly.
    """

    def __init__(self, brokers: int = 1) -> None:
        if isinstance(brokers, bool) or not isinstance(brokers, int) or brokers < 1:
            raise ValueError(f"brokers must be a positive int, got {brokers!r}")
        self._inner = _core.MockKafka(brokers)
        self.bootstrap_servers: str = self._inner.bootstrap_servers

    def kafka(self, **kwargs: Any) -> Any:
        """An ``rb.Kafka`` connected to this cluster (keyword arguments as for ``rb.Kafka``)."""
        from riverbed.kafka import Kafka

        k = Kafka(self.bootstrap_servers, **kwargs)
        k._mock = self
        k._inner.attach_mock(self._inner)
        return k

    def _create_topic(self, name: str, partitions: int, replication: int) -> None:
        self._inner.create_topic(name, partitions, replication)

    def set_broker_up(self, broker: int, up: bool) -> None:
        """Take broker ``broker`` (1-based) down, or bring it back."""
        self._inner.set_broker_up(broker, up)

    def stop(self) -> None:
        self._inner.stop()

    def __enter__(self) -> MockKafka:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"MockKafka({self.bootstrap_servers!r})"
