"""``rb.serve``: the embedded log as a single-node, Kafka-compatible broker.

Any Kafka client (librdkafka / confluent-kafka, kafka-python, aiokafka, the Java client, kcat)
produces, fetches, joins consumer groups and administers topics over the Kafka protocol, while
the process that serves the log keeps using it directly. See the README, "Serving the log".
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from riverbed import _core
from riverbed.log import Log

__all__ = ["Server", "serve"]


def _setting(key: object, value: object) -> tuple[str, str]:
    if not isinstance(key, str):
        raise TypeError(f"config keys are Kafka setting names (str), got {type(key).__name__}")
    if isinstance(value, bool):
        return key, "true" if value else "false"
    if isinstance(value, (int, str)):
        return key, str(value)
    raise TypeError(f"config {key!r}: expected int, bool or str, got {type(value).__name__}")


class Server:
    """A running broker over a :class:`Log` (from :func:`serve`). A context manager: leaving the
    ``with`` block stops it (and closes the log if :func:`serve` opened it)."""

    def __init__(self, core: _core.Server, log: Log, owns_log: bool) -> None:
        self._core = core
        self._log = log
        self._owns_log = owns_log

    @property
    def bootstrap(self) -> str:
        """``HOST:PORT`` for a Kafka client's ``bootstrap.servers``."""
        return self._core.bootstrap

    @property
    def log(self) -> Log:
        """The served log; the process may keep producing to and reading from it."""
        return self._log

    @property
    def running(self) -> bool:
        return self._core.running

    def metrics(self) -> str:
        """The broker's metrics in Prometheus' text format."""
        return self._core.metrics()

    def stop(self) -> None:
        """Stop accepting connections, finish requests in flight and flush the log. Idempotent."""
        try:
            self._core.stop()
        finally:
            if self._owns_log:
                self._log.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"Server(bootstrap={self.bootstrap!r}, log={str(self._log.path)!r}, {state})"


def serve(
    log: Log | str | os.PathLike[str],
    listen: str = "127.0.0.1:9092",
    *,
    fsync: str | None = None,
    config: Mapping[str, int | bool | str] | None = None,
    sasl_users: str | os.PathLike[str] | None = None,
    tls_cert: str | os.PathLike[str] | None = None,
    tls_key: str | os.PathLike[str] | None = None,
    allow_anonymous: bool = False,
    metrics_listen: str | None = None,
) -> Server:
    """Serve ``log`` (a :class:`Log`, or a directory to open) over the Kafka protocol.

    ``listen`` is ``HOST:PORT`` (port 0 picks a free one; read it from ``Server.bootstrap``).
    Only loopback is served unless ``sasl_users`` (a users file: SASL/PLAIN and SCRAM) is given
    or ``allow_anonymous=True`` says an open broker is wanted. ``tls_cert``/``tls_key`` (PEM)
    turn on TLS. ``config`` takes broker settings under Kafka's names (``num.partitions``,
    ``auto.create.topics.enable``, ``message.max.bytes``, ...). ``fsync`` applies when
    ``log`` is a directory (the log's policy: acks are sent once records are durable under it).
    """
    if isinstance(log, Log):
        if fsync is not None:
            raise ValueError("fsync applies when serve() opens the log; a Log keeps the fsync it was opened with")
        target, owns = log, False
    elif isinstance(log, (str, os.PathLike)):
        target, owns = Log(Path(log), fsync or "batch"), True
    else:
        raise TypeError(f"serve() takes a Log or a directory, got {type(log).__name__}")
    if not isinstance(listen, str):
        raise TypeError(f"listen must be 'HOST:PORT', got {type(listen).__name__}")
    if not isinstance(allow_anonymous, bool):
        raise TypeError(f"allow_anonymous must be a bool, got {type(allow_anonymous).__name__}")
    if metrics_listen is not None and not isinstance(metrics_listen, str):
        raise TypeError(f"metrics_listen must be 'HOST:PORT', got {type(metrics_listen).__name__}")
    if config is not None and not isinstance(config, Mapping):
        raise TypeError(f"config must be a mapping of Kafka setting names to values, got {type(config).__name__}")
    try:
        settings = [_setting(k, v) for k, v in (config or {}).items()]
        core = _core.Server(
            target._inner,
            listen,
            settings,
            None if sasl_users is None else str(sasl_users),
            None if tls_cert is None else str(tls_cert),
            None if tls_key is None else str(tls_key),
            allow_anonymous,
            metrics_listen,
        )
    except BaseException:
        if owns:
            target.close()
        raise
    return Server(core, target, owns)
