"""The ``riverbed`` command: topics, produce, consume, check and the demo.

Every command takes ``--log DIR`` (default ``./riverbed-data``). Only the commands that write a
new log (``topics create``, ``demo``) create the directory; the others fail if it is missing.
A failure prints one line ``riverbed: <Error>: <message>`` and exits 1; a usage error (an unknown
option, a missing or bad argument value) prints the usage and exits 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import riverbed as rb
from riverbed._units import timeout_s
from riverbed.exceptions import LogError
from riverbed.log import MAX_PARTITIONS, batch_records

DEFAULT_LOG = "./riverbed-data"


def _parse_setting(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    try:
        return k, json.loads(v)
    except json.JSONDecodeError:
        return k, v


def _int_arg(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """An argparse type: an int in [lo, hi] (a bad value is a usage error, exit 2)."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < lo or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"must be {'>= ' + str(lo) if hi is None else f'between {lo} and {hi}'}, got {v}")
        return v

    return parse


def _open_log(args: argparse.Namespace, create: bool = False) -> rb.Log:
    """The log at ``--log``; only commands that write a new log may create its directory."""
    path = Path(args.log)
    if not create and not path.is_dir():
        raise LogError(f"no log at {str(path)!r}: the directory does not exist")
    return rb.Log(path)


def _topics(args: argparse.Namespace, out: IO[str]) -> int:
    with _open_log(args, create=args.action == "create") as log:
        if args.action == "create":
            t = log.topic(args.name, partitions=args.partitions, **dict(args.config or []))
            print(f"topic {t.name}: {t.partitions} partition(s)", file=out)
        elif args.action == "list":
            for name in log.topics():
                print(name, file=out)
        elif args.action == "describe":
            print(json.dumps(log[args.name].describe(), indent=2), file=out)
        elif args.action == "delete":
            log.delete_topic(args.name)
            print(f"deleted {args.name}", file=out)
    return 0


def _produce(args: argparse.Namespace, out: IO[str]) -> int:
    n = 0
    with _open_log(args) as log:
        topic = log[args.topic]
        src = open(args.file, encoding="utf-8") if args.file else sys.stdin
        try:
            for lineno, line in enumerate(src, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"line {lineno}: not valid JSON ({e}); {n} record(s) produced before it") from None
                key = None
                if args.key_field:
                    if not isinstance(obj, dict) or args.key_field not in obj:
                        raise ValueError(f"line {lineno}: no field {args.key_field!r}; {n} record(s) produced before it")
                    key = obj[args.key_field]
                    key = key if isinstance(key, str) else json.dumps(key)
                ts = obj.get(args.timestamp_field) if args.timestamp_field and isinstance(obj, dict) else None
                topic.produce(line, key=key, timestamp=ts)
                n += 1
        finally:
            if args.file:
                src.close()
    print(f"produced {n} record(s) to {args.topic}", file=sys.stderr)
    return 0


def _decode(b: bytes | None) -> Any:
    if b is None:
        return None
    try:
        s = b.decode()
    except UnicodeDecodeError:
        return b.hex()
    try:
        return json.loads(s)
    except json.JSONDecodeError:
        return s


def _consume(args: argparse.Namespace, out: IO[str]) -> int:
    n = 0
    start = "earliest" if args.from_beginning or not args.group else "latest"
    with _open_log(args) as log, log[args.topic].consumer(group=args.group, start=start) as c:
        while args.max is None or n < args.max:
            batch = c.poll(max_records=min(10_000, (args.max or 10_000) - n), timeout=args.timeout)
            if batch.num_rows == 0:
                break
            for r in batch_records(batch):
                rec = {
                    "partition": r.partition,
                    "offset": r.offset,
                    "timestamp": r.timestamp,
                    "key": _decode(r.key),
                    "value": _decode(r.value),
                }
                if r.headers:
                    rec["headers"] = {k: _decode(v) for k, v in r.headers}
                print(json.dumps(rec), file=out)
                n += 1
        if args.group:
            c.commit()
    return 0


def _check(args: argparse.Namespace, out: IO[str]) -> int:
    """Verify every batch, index and metadata file; one line per damage, exit 1 if any."""
    from pathlib import Path

    if not Path(args.log).is_dir():
        print(f"riverbed: LogError: no log directory at {args.log}", file=sys.stderr)
        return 1
    with rb.Log(args.log, cleanup_interval=None) as log:
        damage = log.check(args.topic)
        for d in damage:
            print(f"damage: {d['message']}", file=out)
        scope = f"topic {args.topic}" if args.topic else f"{len(log.topics())} topic(s)"
    if damage:
        print(f"riverbed check: {len(damage)} problem(s) in {args.log} ({scope})", file=out)
        return 1
    print(f"riverbed check: {args.log} is intact ({scope})", file=out)
    return 0


def _serve(args: argparse.Namespace, out: IO[str]) -> int:
    import signal
    import threading

    config = dict(args.config or [])
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        with rb.serve(
            args.log,
            args.listen,
            fsync=args.fsync,
            config=config,
            sasl_users=args.sasl_users,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            allow_anonymous=args.allow_anonymous,
            metrics_listen=args.metrics_listen,
        ) as server:
            print(f"riverbed: serving {args.log} over the Kafka protocol; bootstrap servers: {server.bootstrap}", file=out)
            if args.metrics_listen:
                print(f"riverbed: metrics at http://{args.metrics_listen}/metrics", file=out)
            out.flush()
            while not stop.wait(0.5):
                pass
            print("riverbed: stopping (finishing requests in flight, flushing the log)", file=out)
            out.flush()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    print("riverbed: stopped", file=out)
    return 0


def _demo(args: argparse.Namespace, out: IO[str]) -> int:
    from riverbed.demo import run_demo

    run_demo(args.log, records=args.records, out=out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log", default=argparse.SUPPRESS, help=f"log directory (default {DEFAULT_LOG})")
    p = argparse.ArgumentParser(prog="riverbed", description="riverbed: an embedded Kafka-style log and stream engine")
    p.add_argument("--log", default=DEFAULT_LOG, help=f"log directory (default {DEFAULT_LOG})")
    p.add_argument("--version", action="version", version=f"riverbed {rb.__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("topics", help="create, list, describe or delete topics", parents=[common])
    tsub = t.add_subparsers(dest="action", required=True)
    c = tsub.add_parser("create", parents=[common], help="create a topic (or check an existing one)")
    c.add_argument("name")
    c.add_argument("--partitions", type=_int_arg(1, MAX_PARTITIONS), default=1, help=f"1 to {MAX_PARTITIONS}")
    c.add_argument("--config", type=_parse_setting, action="append", metavar="KEY=VALUE",
                   help="a topic setting, e.g. retention_ms=86400000 or cleanup=compact")
    tsub.add_parser("list", parents=[common], help="list topics")
    d = tsub.add_parser("describe", parents=[common], help="partitions, offsets and config as JSON")
    d.add_argument("name")
    x = tsub.add_parser("delete", parents=[common], help="delete a topic and its data")
    x.add_argument("name")
    t.set_defaults(func=_topics)

    pr = sub.add_parser("produce", parents=[common], help="produce JSON lines from stdin or --file")
    pr.add_argument("topic")
    pr.add_argument("--file", help="read JSON lines from this file instead of stdin")
    pr.add_argument("--key-field", help="use this field of each JSON object as the record key")
    pr.add_argument("--timestamp-field", help="use this field (int ms) as the record timestamp")
    pr.set_defaults(func=_produce)

    co = sub.add_parser("consume", parents=[common], help="print records as JSON lines")
    co.add_argument("topic")
    co.add_argument("--group", help="consume as a member of this group (and commit at the end)")
    co.add_argument("--from-beginning", action="store_true", help="with --group: start at the earliest offset where the group has no commit (without --group, consume always starts at the beginning)")
    co.add_argument("--max", type=_int_arg(1), help="stop after this many records (>= 1)")
    co.add_argument("--timeout", type=_seconds, default=1.0, help="stop after this many seconds without records (inf: never)")
    co.set_defaults(func=_consume)

    ck = sub.add_parser("check", parents=[common], help="verify every batch, index and metadata file; exit 1 if anything is damaged")
    ck.add_argument("--topic", help="check only this topic")
    ck.set_defaults(func=_check)

    sv = sub.add_parser("serve", parents=[common], help="serve the log to Kafka clients over the Kafka protocol")
    sv.add_argument("--listen", default="127.0.0.1:9092", metavar="HOST:PORT",
                    help="address to listen on (default 127.0.0.1:9092; port 0 picks a free one)")
    sv.add_argument("--fsync", choices=["batch", "interval", "never"], default="batch",
                    help="when records are made durable (acks wait for it; default batch)")
    sv.add_argument("--config", type=_parse_kafka_setting, action="append", metavar="KEY=VALUE",
                    help="a broker setting under Kafka's name, e.g. num.partitions=3")
    sv.add_argument("--sasl-users", metavar="FILE", help="SASL users file (PLAIN, SCRAM-SHA-256/512)")
    sv.add_argument("--tls-cert", metavar="FILE", help="TLS certificate chain (PEM); needs --tls-key")
    sv.add_argument("--tls-key", metavar="FILE", help="TLS private key (PEM); needs --tls-cert")
    sv.add_argument("--allow-anonymous", action="store_true",
                    help="serve a non-loopback address without authentication")
    sv.add_argument("--metrics-listen", metavar="HOST:PORT", help="serve Prometheus metrics over HTTP here")
    sv.set_defaults(func=_serve)

    de = sub.add_parser("demo", parents=[common], help="run the end-to-end demo on the embedded log")
    de.add_argument("--records", type=_int_arg(1), default=1_000_000)
    de.set_defaults(func=_demo)
    return p


def _parse_kafka_setting(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` with a Kafka broker setting name; the broker checks name and value."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def _seconds(text: str) -> float:
    """A ``--timeout`` value, checked as every timeout is (``inf``: no limit)."""
    try:
        secs = timeout_s(float(text), "--timeout")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--timeout: ")) from None
    return math.inf if secs is None else secs


def main(argv: Sequence[str] | None = None, out: IO[str] | None = None) -> int:
    """Run the command; returns its exit status (a usage error exits 2 from argparse)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args, out or sys.stdout)
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        print("riverbed: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - every failure is one line, never a traceback
        message = " ".join(str(e).split()) or repr(e)
        print(f"riverbed: {type(e).__name__}: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
