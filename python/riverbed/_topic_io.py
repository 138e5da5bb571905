"""How a topic hands a pipeline its source and its sink.

A topic object (``log.Topic``, ``kafka.KafkaTopic``) implements ``_riverbed_source(...)``,
returning a ``_core.Source``, and ``_riverbed_sink(key)``, returning a ``_core.Sink``; a Kafka
topic also names ``_riverbed_state_dir`` (where a run of it keeps state). ``pipeline.py`` asks for
these and imports neither ``log`` nor ``kafka``. The checks every topic read shares live here, so
the two kinds of topic refuse the same arguments with the same words.
"""

from __future__ import annotations

import pyarrow as pa

from riverbed import _core

FORMATS = ("json", "raw")
ON_ERROR = ("raise", "skip", "dead_letter")


def check_read(fmt: str, schema: pa.Schema | None, on_error: str | None, dead_letter: object) -> None:
    """The arguments of ``read()`` every topic takes: how values decode, and the bad-record policy."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be 'json' or 'raw', got {fmt!r}")
    if on_error is not None and on_error not in ON_ERROR:
        raise ValueError(f"read: on_error must be 'raise', 'skip' or 'dead_letter', got {on_error!r}")
    if dead_letter is not None and on_error != "dead_letter":
        raise ValueError("read: dead_letter= goes with on_error='dead_letter'")


def check_raw_schema(fmt: str, schema: pa.Schema | None) -> None:
    if fmt == "raw" and schema is not None:
        raise ValueError("read: schema= has no effect with format='raw' (a binary value column); decode with format='json' or drop schema=")


def error_args(on_error: str | None, dead_letter: object, where: str) -> tuple[str | None, _core.Topic | None]:
    """Check an ``on_error``/``dead_letter`` pair; the dead-letter topic as the native one."""
    if on_error is not None and on_error not in ON_ERROR:
        raise ValueError(f"{where}: on_error must be 'raise', 'skip' or 'dead_letter', got {on_error!r}")
    if dead_letter is not None:
        if on_error != "dead_letter":
            raise ValueError(f"{where}: dead_letter= goes with on_error='dead_letter'")
        native = getattr(dead_letter, "_inner", dead_letter)  # a log.Topic wraps its native one
        if isinstance(native, _core.Topic):
            return on_error, native
        raise TypeError(f"{where}: dead_letter must be a Topic, got {type(dead_letter).__name__}")
    return on_error, None


def log_source(
    topic: _core.Topic,
    schema: pa.Schema | None,
    fmt: str,
    batch_size: int | None,
    on_error: str | None,
    dead_letter: object,
    group: str | None,
    start: str,
) -> _core.Source:
    """The source reading a topic of the embedded log (its dead letters, by default, go to
    ``<topic>.dlq`` of the same log)."""
    check_raw_schema(fmt, schema)
    if group is not None or start != "earliest":
        raise TypeError("read: group= and start= apply to Kafka topics")
    if fmt not in FORMATS:
        raise ValueError(f"format must be 'json' or 'raw', got {fmt!r}")
    mode, dlq = error_args(on_error, dead_letter, "read")
    if mode == "dead_letter" and dlq is None:
        dlq = topic.sibling(f"{topic.name}.dlq")
    return _core.Source.log(topic, fmt, schema, batch_size or 65_536, mode, dlq)
