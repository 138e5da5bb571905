"""riverbed: a Kafka-style partitioned log and an event-time stream engine, in one package.

>>> import riverbed as rb
>>> rb.murmur2(b"21")
-973932308
"""

from riverbed import exceptions
from riverbed._core import __version__, murmur2
from riverbed.log import Consumer, Log, Record, Topic

__all__ = ["Consumer", "Log", "Record", "Topic", "__version__", "exceptions", "murmur2"]
