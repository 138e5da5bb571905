"""Consumer groups of three Python Kafka clients against riverbed's broker (the `serve` example).

    python check_groups.py <path to target/debug/examples/serve>

For confluent-kafka (librdkafka), kafka-python and aiokafka in turn: two consumers of one group split a
4-partition topic (2 partitions each), read every record exactly once with each offset
committed synchronously, the group rebalances when one leaves (the other then owns all 4),
committed offsets are what the clients and the admin APIs (list / describe groups, list group
offsets) report, and an empty group is deleted. Exits non-zero on the first mismatch.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable

import aiokafka
import aiokafka.structs
import kafka
from confluent_kafka import (
    Consumer,
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

PARTITIONS = 4


def wait(what: str, cond: Callable[[], bool], limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def produce(bootstrap: str, topic: str, start: int, n: int) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for i in range(start, start + n):
        p.produce(topic, key=str(i).encode(), value=f"v{i}".encode(), partition=i % PARTITIONS)
    assert p.flush(30) == 0


class Member(threading.Thread):
    """One group member polling in its own thread; records counted once committed."""

    def __init__(self, client: str, name: str, bootstrap: str, group: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.client, self.name, self.bootstrap, self.group, self.topic = (
            client,
            name,
            bootstrap,
            group,
            topic,
        )
        self.read: list[tuple[int, int]] = []
        self.assignment: list[int] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            if self.client == "confluent-kafka":
                self.run_ck()
            elif self.client == "kafka-python":
                self.run_kp()
            else:
                asyncio.run(self.run_ak())
        except BaseException as e:  # reported by the main thread
            self.error = e

    def run_ck(self) -> None:
        c = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": self.group,
                "client.id": self.name,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "session.timeout.ms": 10000,
                "heartbeat.interval.ms": 500,
            }
        )
        c.subscribe([self.topic])
        while not self.stop.is_set():
            m = c.poll(0.1)
            if m is not None and not m.error():
                c.commit(message=m, asynchronous=False)
                self.read.append((m.partition(), m.offset()))
            self.assignment = sorted(tp.partition for tp in c.assignment())
        c.close()  # LeaveGroup

    def run_kp(self) -> None:
        c = kafka.KafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap,
            group_id=self.group,
            client_id=self.name,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=10000,
            heartbeat_interval_ms=500,
        )
        while not self.stop.is_set():
            for tp, msgs in c.poll(timeout_ms=100).items():
                for m in msgs:
                    c.commit({tp: kafka.OffsetAndMetadata(m.offset + 1, "kp", -1)})
                    self.read.append((m.partition, m.offset))
            self.assignment = sorted(tp.partition for tp in c.assignment())
        c.close()  # LeaveGroup

    async def run_ak(self) -> None:
        c = aiokafka.AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap,
            group_id=self.group,
            client_id=self.name,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=10000,
            heartbeat_interval_ms=500,
        )
        await c.start()
        try:
            while not self.stop.is_set():
                for tp, msgs in (await c.getmany(timeout_ms=100)).items():
                    for m in msgs:
                        await c.commit({tp: aiokafka.structs.OffsetAndMetadata(m.offset + 1, "ak")})
                        self.read.append((m.partition, m.offset))
                self.assignment = sorted(tp.partition for tp in c.assignment())
        finally:
            await c.stop()  # LeaveGroup


def check(client: str, bootstrap: str) -> None:
    topic, group = f"t-{client}", f"g-{client}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])[topic].result(30)
    a = Member(client, "a", bootstrap, group, topic)
    b = Member(client, "b", bootstrap, group, topic)
    a.start()
    wait(f"{client}: a owns all", lambda: a.assignment == list(range(PARTITIONS)))
    b.start()
    wait(
        f"{client}: 2+2 split",
        lambda: (
            len(a.assignment) == 2
            and len(b.assignment) == 2
            and sorted(a.assignment + b.assignment) == list(range(PARTITIONS))
        ),
    )
    produce(bootstrap, topic, 0, 400)
    wait(f"{client}: 400 read", lambda: len(a.read) + len(b.read) >= 400)
    assert {p for p, _ in a.read} == set(a.assignment), (a.read[:3], a.assignment)
    assert {p for p, _ in b.read} == set(b.assignment)
    b.stop.set()
    b.join(30)
    wait(f"{client}: a owns all again", lambda: a.assignment == list(range(PARTITIONS)), 8)
    produce(bootstrap, topic, 400, 200)
    wait(f"{client}: 600 read", lambda: len(a.read) + len(b.read) >= 600)
    time.sleep(0.5)
    for m in (a, b):
        if m.error:
            raise m.error
    read = sorted(a.read + b.read)
    assert len(read) == len(set(read)) == 600, f"{client}: {len(read)} reads, {len(set(read))} distinct"
    assert set(read) == {(p, o) for p in range(PARTITIONS) for o in range(150)}
    # committed offsets, as a third client of the group sees them, and the admin APIs
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    committed = probe.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)
    assert [tp.offset for tp in committed] == [150] * PARTITIONS, committed
    probe.close()
    [got] = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)]).values()
    offsets = got.result(10).topic_partitions
    assert {tp.partition: tp.offset for tp in offsets} == dict.fromkeys(range(PARTITIONS), 150)
    # The metadata string each client committed with (read back by kafka-python: confluent-kafka
    # 2.16 reads TopicPartition.metadata past its length when it is not NUL-terminated).
    want_metadata = {"kafka-python": "kp", "aiokafka": "ak"}.get(client)
    if want_metadata:
        reader = kafka.KafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
        for p in range(PARTITIONS):
            got_meta = reader.committed(kafka.TopicPartition(topic, p), metadata=True)
            assert (got_meta.offset, got_meta.metadata) == (150, want_metadata), got_meta
        reader.close()
    listed = {g.group_id: g.state for g in admin.list_consumer_groups().result(10).valid}
    assert listed.get(group) == ConsumerGroupState.STABLE, listed
    desc = admin.describe_consumer_groups([group])[group].result(10)
    assert desc.state == ConsumerGroupState.STABLE and len(desc.members) == 1, desc
    assert desc.members[0].client_id == "a", desc.members
    assert sorted(tp.partition for tp in desc.members[0].assignment.topic_partitions) == list(
        range(PARTITIONS)
    )
    a.stop.set()
    a.join(30)
    wait(
        f"{client}: group empty",
        lambda: admin.describe_consumer_groups([group])[group].result(10).state == ConsumerGroupState.EMPTY,
        10,
    )
    admin.delete_consumer_groups([group])[group].result(10)
    assert group not in {g.group_id for g in admin.list_consumer_groups().result(10).valid}
    print(f"{client}: ok (2-way split, 600 records once, rebalance on leave, offsets, admin)")


def main() -> int:
    serve = sys.argv[1]
    with tempfile.TemporaryDirectory() as d:
        proc = subprocess.Popen(
            [serve, d, "127.0.0.1:0"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        try:
            line = proc.stdout.readline().strip()
            assert line.startswith("bootstrap="), line
            bootstrap = line.split("=", 1)[1]
            for client in ("confluent-kafka", "kafka-python", "aiokafka"):
                check(client, bootstrap)
        finally:
            proc.stdin.close()
            proc.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
