"""`riverbed serve`: real Kafka clients of four kinds against the served log.

kafka-python, confluent-kafka (librdkafka, idempotent producer), aiokafka and kcat (a C
program) each produce into one served topic, and each of them reads back everything all of
them wrote, with keys, values, headers, timestamps and partitions intact; the log's own
readers (``Topic.read``, ``rb.Pipeline.read``) see the same records, and records produced
through the log's Python API reach every client. The reference is the list of records each
producer was asked to write, not anything riverbed reports.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

import riverbed as rb

confluent_kafka = pytest.importorskip("confluent_kafka")
kafka = pytest.importorskip("kafka")
aiokafka = pytest.importorskip("aiokafka")

KCAT = shutil.which("kcat")
PARTITIONS = 3
N = 120  # records per producer
TS0 = 1_700_000_000_000
TIMEOUT = 60.0

# (partition, key, value, headers, timestamp or None when the client sets "now")
Rec = tuple[int, bytes, bytes, tuple[tuple[str, bytes], ...], "int | None"]


def expected(name: str) -> list[Rec]:
    out: list[Rec] = []
    for i in range(N):
        value = json.dumps({"client": name, "i": i}).encode()
        key = f"{name}-{i % 7}".encode()
        if name == "kcat":  # kcat: one header for all, the timestamp is "now"
            out.append((i % PARTITIONS, key, value, (("src", b"kcat"),), None))
        else:
            headers = (("src", name.encode()), ("i", str(i).encode()))
            out.append((i % PARTITIONS, key, value, headers, TS0 + 1000 * i))
    return out


# -- producers -------------------------------------------------------------------------------


def produce_kafka_python(bootstrap: str, topic: str, recs: list[Rec]) -> None:
    p = kafka.KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    futures = [
        p.send(topic, value=v, key=k, headers=list(h), partition=part, timestamp_ms=ts)
        for part, k, v, h, ts in recs
    ]
    p.flush(TIMEOUT)
    for f in futures:
        f.get(timeout=TIMEOUT)
    p.close()


def produce_confluent(bootstrap: str, topic: str, recs: list[Rec], **conf: object) -> None:
    errors: list[object] = []
    p = confluent_kafka.Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5, **conf}
    )
    for part, k, v, h, ts in recs:
        p.produce(
            topic, value=v, key=k, partition=part, timestamp=ts or 0, headers=list(h),
            on_delivery=lambda err, msg: err and errors.append(err),
        )
        p.poll(0)
    assert p.flush(TIMEOUT) == 0
    assert errors == []


def produce_aiokafka(bootstrap: str, topic: str, recs: list[Rec]) -> None:
    async def run() -> None:
        p = aiokafka.AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await p.start()
        try:
            for part, k, v, h, ts in recs:
                await p.send_and_wait(topic, value=v, key=k, partition=part, timestamp_ms=ts, headers=list(h))
        finally:
            await p.stop()

    asyncio.run(run())


def produce_kcat(bootstrap: str, topic: str, recs: list[Rec]) -> None:
    assert KCAT
    for part in range(PARTITIONS):
        lines = b"".join(k + b"\t" + v + b"\n" for p, k, v, _h, _ts in recs if p == part)
        subprocess.run(
            [KCAT, "-P", "-b", bootstrap, "-t", topic, "-p", str(part), "-K", "\t", "-H", "src=kcat",
             "-X", "enable.idempotence=true"],
            input=lines, check=True, timeout=TIMEOUT,
        )


def produce_log_api(server: rb.Server, topic: str, recs: list[Rec]) -> None:
    t = server.log.topic(topic)
    for part, k, v, h, ts in recs:
        t.produce(v, key=k, timestamp=ts, headers=list(h), partition=part)


# -- consumers: each returns (partition, offset, key, value, headers, timestamp) --------------

Got = tuple[int, int, bytes, bytes, tuple[tuple[str, bytes], ...], int]


def consume_kafka_python(bootstrap: str, topic: str, total: int, group: str | None = None) -> list[Got]:
    c = kafka.KafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
        enable_auto_commit=False, consumer_timeout_ms=int(TIMEOUT * 1000),
    )
    if group is None:
        tps = [kafka.TopicPartition(topic, p) for p in range(PARTITIONS)]
        c.assign(tps)
        c.seek_to_beginning(*tps)
    else:
        c.subscribe([topic])
    out: list[Got] = []
    for m in c:
        out.append((m.partition, m.offset, m.key, m.value, tuple((k, v) for k, v in m.headers), m.timestamp))
        if len(out) >= total:
            break
    if group is not None:
        c.commit()
    c.close()
    return out


def consume_confluent(bootstrap: str, topic: str, total: int, group: str = "confluent-reader") -> list[Got]:
    c = confluent_kafka.Consumer({
        "bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    c.subscribe([topic])
    out: list[Got] = []
    deadline = time.monotonic() + TIMEOUT
    while len(out) < total and time.monotonic() < deadline:
        m = c.poll(1.0)
        if m is None:
            continue
        assert m.error() is None, m.error()
        out.append((m.partition(), m.offset(), m.key(), m.value(), tuple(m.headers() or ()), m.timestamp()[1]))
    c.commit(asynchronous=False)
    c.close()
    return out


def consume_aiokafka(bootstrap: str, topic: str, total: int) -> list[Got]:
    async def run() -> list[Got]:
        c = aiokafka.AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, group_id="aiokafka-reader",
            auto_offset_reset="earliest", enable_auto_commit=False,
        )
        await c.start()
        out: list[Got] = []
        try:
            deadline = time.monotonic() + TIMEOUT
            while len(out) < total and time.monotonic() < deadline:
                batches = await c.getmany(timeout_ms=1000)
                for msgs in batches.values():
                    out.extend(
                        (m.partition, m.offset, m.key, m.value, tuple(m.headers), m.timestamp) for m in msgs
                    )
            await c.commit()
        finally:
            await c.stop()
        return out

    return asyncio.run(run())


def consume_kcat(bootstrap: str, topic: str, total: int) -> list[Got]:
    assert KCAT
    res = subprocess.run(
        [KCAT, "-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e", "-J", "-c", str(total)],
        capture_output=True, check=True, timeout=TIMEOUT,
    )
    out: list[Got] = []
    for line in res.stdout.decode().splitlines():
        m = json.loads(line)
        hs = m.get("headers") or []
        headers = tuple((hs[i], hs[i + 1].encode()) for i in range(0, len(hs), 2))
        out.append((m["partition"], m["offset"], m["key"].encode(), m["payload"].encode(), headers, m["ts"]))
    return out


def consume_log(server: rb.Server, topic: str) -> list[Got]:
    t = server.log.topic(topic).read().to_pylist()
    return [
        (r["partition"], r["offset"], r["key"], r["value"], tuple((h["key"], h["value"]) for h in r["headers"]), _ms(r["timestamp"]))
        for r in t
    ]


def _ms(ts: object) -> int:
    if isinstance(ts, int):
        return ts
    import datetime as dt

    assert isinstance(ts, dt.datetime)
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=dt.timezone.utc)
    return round(ts.timestamp() * 1000)


# -- the check ------------------------------------------------------------------------------


def check_all(got: list[Got], wanted: dict[str, list[Rec]], t_before: int, t_after: int, reader: str) -> None:
    """``got`` holds exactly the wanted records, each producer's in its order per partition,
    offsets 0.. dense per partition, and timestamps as sent (kcat's: its produce time)."""
    total = sum(len(v) for v in wanted.values())
    assert len(got) == total, f"{reader}: {len(got)} records, {total} produced"
    offsets: dict[int, list[int]] = {}
    for part, off, *_ in got:
        offsets.setdefault(part, []).append(off)
    for part, offs in offsets.items():
        assert sorted(offs) == list(range(len(offs))), f"{reader}: partition {part} offsets {offs[:10]}..."
    by_offset = sorted(got, key=lambda g: (g[0], g[1]))
    for name, recs in wanted.items():
        for part in range(PARTITIONS):
            want = [r for r in recs if r[0] == part]
            mine = [g for g in by_offset if g[0] == part and json.loads(g[3])["client"] == name]
            assert [(g[2], g[3], g[4]) for g in mine] == [(r[1], r[2], r[3]) for r in want], (
                f"{reader}: {name}'s records in partition {part} differ"
            )
            for g, r in zip(mine, want):
                if r[4] is None:
                    assert t_before - 1000 <= g[5] <= t_after + 1000, f"{reader}: kcat timestamp {g[5]}"
                else:
                    assert g[5] == r[4], f"{reader}: {name} timestamp {g[5]} != {r[4]}"


def test_four_clients_and_the_log_read_what_each_other_wrote(rb_broker: rb.Server) -> None:
    bootstrap = rb_broker.bootstrap
    topic = "interop"
    rb_broker.log.topic(topic, partitions=PARTITIONS)
    wanted = {name: expected(name) for name in ["kafka-python", "confluent", "aiokafka", "log-api"]}
    if KCAT:
        wanted["kcat"] = expected("kcat")
    t_before = int(time.time() * 1000)
    produce_kafka_python(bootstrap, topic, wanted["kafka-python"])
    produce_confluent(bootstrap, topic, wanted["confluent"])
    produce_aiokafka(bootstrap, topic, wanted["aiokafka"])
    produce_log_api(rb_broker, topic, wanted["log-api"])
    if KCAT:
        produce_kcat(bootstrap, topic, wanted["kcat"])
    t_after = int(time.time() * 1000)
    total = sum(len(v) for v in wanted.values())

    check_all(consume_log(rb_broker, topic), wanted, t_before, t_after, "Topic.read")
    check_all(consume_kafka_python(bootstrap, topic, total), wanted, t_before, t_after, "kafka-python")
    check_all(consume_kafka_python(bootstrap, topic, total, group="kp-group"), wanted, t_before, t_after, "kafka-python group")
    check_all(consume_confluent(bootstrap, topic, total), wanted, t_before, t_after, "confluent-kafka group")
    check_all(consume_aiokafka(bootstrap, topic, total), wanted, t_before, t_after, "aiokafka group")
    if KCAT:
        check_all(consume_kcat(bootstrap, topic, total), wanted, t_before, t_after, "kcat")

    # a pipeline reads the JSON values the clients wrote, straight from the log
    table = rb.Pipeline.read(rb_broker.log.topic(topic)).collect()
    seen = Counter((c, i) for c, i in zip(table.column("client").to_pylist(), table.column("i").to_pylist()))
    assert seen == Counter((name, i) for name in wanted for i in range(N))

    # the groups' commits are visible to the log's own group consumer (one store)
    committed = rb_broker.log.topic(topic).consumer(group="confluent-reader").committed()
    ends = {p: sum(1 for recs in wanted.values() for r in recs if r[0] == p) for p in range(PARTITIONS)}
    assert committed == ends

    # metrics: per-partition end offsets, and lag per group (0: each group read everything)
    rb_broker.log.topic(topic).produce(b'{"client": "late", "i": 0}', partition=0)
    metrics = rb_broker.metrics()
    assert f'riverbed_partition_end_offset{{topic="{topic}",partition="0"}} {ends[0] + 1}' in metrics
    assert f'riverbed_consumer_group_lag{{group="confluent-reader",topic="{topic}",partition="0"}} 1' in metrics
    assert f'riverbed_consumer_group_lag{{group="confluent-reader",topic="{topic}",partition="1"}} 0' in metrics
    assert 'riverbed_requests_total{api="Produce"}' in metrics


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_each_compression_codec_round_trips(rb_broker: rb.Server, codec: str) -> None:
    topic = f"codec-{codec}"
    rb_broker.log.topic(topic, partitions=PARTITIONS)
    recs = expected("confluent")
    produce_confluent(rb_broker.bootstrap, topic, recs, **{"compression.type": codec, "linger.ms": 50})
    wanted = {"confluent": recs}
    now = int(time.time() * 1000)
    # stored as sent: compressed batches, read back decoded by the log and by clients
    check_all(consume_log(rb_broker, topic), wanted, now, now, f"Topic.read ({codec})")
    check_all(consume_kafka_python(rb_broker.bootstrap, topic, N), wanted, now, now, f"kafka-python ({codec})")
    check_all(consume_confluent(rb_broker.bootstrap, topic, N), wanted, now, now, f"confluent ({codec})")
    table = rb.Pipeline.read(rb_broker.log.topic(topic)).collect()
    assert sorted(table.column("i").to_pylist()) == list(range(N))


def test_auto_created_topic_and_admin_client(rb_broker: rb.Server) -> None:
    from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic

    admin = AdminClient({"bootstrap.servers": rb_broker.bootstrap})
    fs = admin.create_topics([NewTopic("made-by-admin", num_partitions=4, config={"retention.ms": "3600000"})])
    fs["made-by-admin"].result(TIMEOUT)
    assert rb_broker.log.topic("made-by-admin").partitions == 4
    assert rb_broker.log.topic("made-by-admin").config["retention_ms"] == 3_600_000
    md = admin.list_topics(timeout=TIMEOUT)
    assert "made-by-admin" in md.topics and len(md.topics["made-by-admin"].partitions) == 4
    assert "__consumer_offsets" not in md.topics or md.topics["__consumer_offsets"].error is None
    res = ConfigResource(ConfigResource.Type.TOPIC, "made-by-admin")
    configs = admin.describe_configs([res])[res].result(TIMEOUT)
    assert configs["retention.ms"].value == "3600000"
    admin.create_partitions([NewPartitions("made-by-admin", 6)])["made-by-admin"].result(TIMEOUT)
    assert rb_broker.log.topic("made-by-admin").partitions == 6
    admin.delete_topics(["made-by-admin"])["made-by-admin"].result(TIMEOUT)
    assert "made-by-admin" not in rb_broker.log.topics()
    # a producer to a topic nobody created: auto-created with num.partitions (1)
    produce_kafka_python(rb_broker.bootstrap, "auto-made", [(0, b"k", b'{"client": "x", "i": 0}', (), TS0)])
    assert rb_broker.log.topic("auto-made").read().num_rows == 1


def test_metrics_over_http(tmp_path: Path) -> None:
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with rb.serve(tmp_path / "log", "127.0.0.1:0", fsync="never", metrics_listen=f"127.0.0.1:{port}",
                  config={"num.partitions": 3}) as server:
        produce_confluent(server.bootstrap, "m", expected("confluent")[:9], **{"linger.ms": 0})
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=TIMEOUT).read().decode()
        assert "# TYPE riverbed_requests_total counter" in text
        assert 'riverbed_partition_end_offset{topic="m",partition="0"} 3' in text
        assert "riverbed_records_produced_total 9" in text


def test_hostile_review_findings(rb_broker: rb.Server, tmp_path: Path) -> None:
    """What a hostile review found (session 13), each now refused or fixed."""
    from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic

    # one server per log: a second broker over the same Log would run its own groups
    with pytest.raises(rb.exceptions.ServerError, match="already served at " + rb_broker.bootstrap):
        rb.serve(rb_broker.log, "127.0.0.1:0")
    # topic creation is bounded (per topic, and by what the process can keep open)
    admin = AdminClient({"bootstrap.servers": rb_broker.bootstrap})
    with pytest.raises(confluent_kafka.KafkaException, match="at most 10000"):
        admin.create_topics([NewTopic("too-many", 10_001, 1)])["too-many"].result(TIMEOUT)
    with pytest.raises(confluent_kafka.KafkaException, match="retention.ms=-7"):
        admin.create_topics([NewTopic("neg", 1, 1, config={"retention.ms": "-7"})])["neg"].result(TIMEOUT)
    assert "too-many" not in rb_broker.log.topics() and "neg" not in rb_broker.log.topics()
    admin.create_topics([NewTopic("ok", 2, 1)])["ok"].result(TIMEOUT)
    entry = ConfigEntry("retention.ms", "-5", incremental_operation=AlterConfigOpType.SET)
    res = ConfigResource(ConfigResource.Type.TOPIC, "ok", incremental_configs=[entry])
    with pytest.raises(confluent_kafka.KafkaException):
        admin.incremental_alter_configs([res])[res].result(TIMEOUT)
    assert rb_broker.log.topic("ok").config["retention_ms"] is None or rb_broker.log.topic("ok").config["retention_ms"] >= 0
    # every metric family's samples are together (Prometheus' text format)
    produce_confluent(rb_broker.bootstrap, "ok", [(p, b"k", b"v", (), TS0) for p in (0, 1)])
    consume_confluent(rb_broker.bootstrap, "ok", 2, group="fam")
    names = [line.split("{")[0].split(" ")[0] for line in rb_broker.metrics().splitlines() if not line.startswith("#")]
    runs = [n for i, n in enumerate(names) if i == 0 or names[i - 1] != n]
    assert len(runs) == len(set(runs)), runs
    # an exposed metrics port needs allow_anonymous, like the broker's
    log = rb.Log(tmp_path / "log2", fsync="never")
    try:
        with pytest.raises(rb.exceptions.ServerError, match="metrics"):
            rb.serve(log, "127.0.0.1:0", metrics_listen="0.0.0.0:0")
        # a bad number says out of range, not "not a whole number"
        with pytest.raises(ValueError, match="out of range"):
            rb.serve(log, "127.0.0.1:0", config={"num.partitions": -1})
    finally:
        log.close()


def test_serve_arguments_are_checked(tmp_path: Path) -> None:
    log = rb.Log(tmp_path / "log", fsync="never")
    try:
        with pytest.raises(ValueError, match="listen"):
            rb.serve(log, "no-port-here")
        with pytest.raises(ValueError, match="num.partitions"):
            rb.serve(log, "127.0.0.1:0", config={"num.partitions": 0})
        with pytest.raises(ValueError, match="unknown broker setting"):
            rb.serve(log, "127.0.0.1:0", config={"num.partitons": 3})
        with pytest.raises(TypeError):
            rb.serve(log, "127.0.0.1:0", config={"num.partitions": 1.5})  # type: ignore[dict-item]
        with pytest.raises(TypeError):
            rb.serve(42)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="fsync"):
            rb.serve(log, "127.0.0.1:0", fsync="never")
        # an exposed address needs authentication or an explicit allow_anonymous
        with pytest.raises(rb.exceptions.ServerError, match="(?i)anonymous|authentication"):
            rb.serve(log, "0.0.0.0:0")
        # a port in use is an error naming it
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            port = s.getsockname()[1]
            with pytest.raises(rb.exceptions.ServerError, match=str(port)):
                rb.serve(log, f"127.0.0.1:{port}")
        # after all of that the log still works, and serves
        with rb.serve(log, "127.0.0.1:0") as server:
            assert server.running and server.bootstrap.startswith("127.0.0.1:")
        assert not server.running
        server.stop()  # idempotent
        log.topic("still-works").produce(b"x")
    finally:
        log.close()


def test_a_second_process_is_told_where_the_log_is_served(tmp_path: Path) -> None:
    with rb.serve(tmp_path / "log", "127.0.0.1:0", fsync="never") as server:
        code = (
            "import riverbed as rb, sys\n"
            "try:\n"
            f"    rb.Log({str(tmp_path / 'log')!r})\n"
            "except rb.exceptions.LogLocked as e:\n"
            "    print(e)\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT)
        assert server.bootstrap in out.stdout, out.stdout + out.stderr
    # stopped: the directory opens again
    rb.Log(tmp_path / "log").close()


def test_cli_serve_prints_bootstrap_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "riverbed.cli", "--log", str(tmp_path / "log"), "serve", "--listen", "127.0.0.1:0",
         "--config", "num.partitions=2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "bootstrap servers: 127.0.0.1:" in line, line + (proc.stderr.read() if proc.stderr else "")
        bootstrap = line.rsplit(" ", 1)[1].strip()
        produce_confluent(bootstrap, "via-cli", [r for r in expected("confluent")[:45] if r[0] < 2])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    with rb.Log(tmp_path / "log") as log:
        assert log.topic("via-cli").read().num_rows == 30
        assert log.topic("via-cli").partitions == 2


def test_cli_serve_usage_errors(tmp_path: Path) -> None:
    env = dict(os.environ)
    bad = subprocess.run(
        [sys.executable, "-m", "riverbed.cli", "--log", str(tmp_path / "log"), "serve", "--config", "nonsense"],
        capture_output=True, text=True, timeout=TIMEOUT, env=env,
    )
    assert bad.returncode == 2 and "KEY=VALUE" in bad.stderr
    refused = subprocess.run(
        [sys.executable, "-m", "riverbed.cli", "--log", str(tmp_path / "log"), "serve", "--listen", "0.0.0.0:0"],
        capture_output=True, text=True, timeout=TIMEOUT, env=env,
    )
    assert refused.returncode == 1 and refused.stderr.startswith("riverbed: ServerError:"), refused.stderr
