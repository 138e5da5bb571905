"""riverbed: a Kafka-style partitioned log and an event-time stream engine, in one package.

>>> import riverbed as rb
>>> rb.murmur2(b"21")
-973932308
"""

import os as _os

# mimalloc (the extension's allocator) uses no transparent huge pages: the kernel would zero
# 2 MiB for every fresh page. Set before the extension loads; an explicit MIMALLOC_ALLOW_THP wins.
# Freed memory goes back to the OS after mimalloc's own delay (1 s): returning it at once
# (MIMALLOC_PURGE_DELAY=0, as before 2026-12-03) saved ~18 MB of peak RSS in the 1M-state
# benchmark but faulted every step's buffers in again — a third of the CPU of a topic -> topic run.
_os.environ.setdefault("MIMALLOC_ALLOW_THP", "0")

from riverbed import exceptions  # noqa: E402
from riverbed._core import __version__, murmur2
from riverbed.expr import (
    Expr,
    col,
    count,
    count_distinct,
    first,
    last,
    lit,
    max,
    mean,
    min,
    std,
    sum,
    var,
    when,
)
from riverbed.kafka import Kafka, KafkaConsumer, KafkaTopic
from riverbed.log import Consumer, Log, Record, Topic
from riverbed.pipeline import Pipeline, RunResult
from riverbed.server import Server, serve
from riverbed.table import Table
from riverbed.training import training_set
from riverbed.windows import Window, count_window, hopping, session, sliding, tumbling

__all__ = [
    "Consumer",
    "Expr",
    "Kafka",
    "KafkaConsumer",
    "KafkaTopic",
    "Log",
    "Pipeline",
    "Record",
    "RunResult",
    "Server",
    "Table",
    "Topic",
    "Window",
    "__version__",
    "col",
    "count",
    "count_distinct",
    "count_window",
    "exceptions",
    "serve",
    "first",
    "hopping",
    "last",
    "lit",
    "max",
    "mean",
    "min",
    "murmur2",
    "session",
    "sliding",
    "std",
    "sum",
    "training_set",
    "tumbling",
    "var",
    "when",
]
