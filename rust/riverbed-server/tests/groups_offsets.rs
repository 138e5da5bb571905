//! Committed offsets through the Coordinator: OffsetCommit (simple and generation-checked),
//! OffsetFetch (v1-v9, batched groups), OffsetDelete; shared with the embedded groups and
//! durable across a restart.

mod group_support;

use group_support::*;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::{
    OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetFetchRequest,
    OffsetFetchResponse, TopicName,
};
use riverbed_log::{Consumer, Log, StartSpec};
use riverbed_server::groups::{CommittedOffset, Coordinator};

const RANGE: &[(&str, &[&str])] = &[("range", &["t"])];

fn tn(v: &str) -> TopicName {
    TopicName(s(v))
}

/// OffsetCommit of (topic, partition, offset, metadata) by `member` at `generation`.
fn commit_req(
    group: &str,
    member: &str,
    generation: i32,
    offsets: &[(&str, i32, i64, &str)],
) -> OffsetCommitRequest {
    let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
    for (t, p, o, m) in offsets {
        let part = OffsetCommitRequestPartition::default()
            .with_partition_index(*p)
            .with_committed_offset(*o)
            .with_committed_leader_epoch(7)
            .with_committed_metadata(Some(s(m)));
        match topics.iter_mut().find(|x| x.name.as_str() == *t) {
            Some(x) => x.partitions.push(part),
            None => topics.push(
                OffsetCommitRequestTopic::default()
                    .with_name(tn(t))
                    .with_partitions(vec![part]),
            ),
        }
    }
    OffsetCommitRequest::default()
        .with_group_id(gid(group))
        .with_member_id(s(member))
        .with_generation_id_or_member_epoch(generation)
        .with_topics(topics)
}

fn codes(r: &OffsetCommitResponse) -> Vec<(String, i32, i16)> {
    r.topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.to_string(), p.partition_index, p.error_code))
        })
        .collect()
}

/// OffsetFetch v1-v7 answer as (topic, partition, offset, metadata, epoch, error).
fn fetched(r: &OffsetFetchResponse) -> Vec<(String, i32, i64, String, i32, i16)> {
    r.topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| {
                (
                    t.name.to_string(),
                    p.partition_index,
                    p.committed_offset,
                    p.metadata.as_deref().unwrap_or("<null>").to_string(),
                    p.committed_leader_epoch,
                    p.error_code,
                )
            })
        })
        .collect()
}

fn fetch_v7(group: &str, topics: Option<&[(&str, &[i32])]>) -> OffsetFetchRequest {
    OffsetFetchRequest::default()
        .with_group_id(gid(group))
        .with_topics(topics.map(|ts| {
            ts.iter()
                .map(|(t, ps)| {
                    OffsetFetchRequestTopic::default()
                        .with_name(tn(t))
                        .with_partition_indexes(ps.to_vec())
                })
                .collect()
        }))
}

fn row(t: &str, p: i32, o: i64, m: &str, e: i32) -> (String, i32, i64, String, i32, i16) {
    (t.to_string(), p, o, m.to_string(), e, NONE)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_commits_are_fetched_with_metadata_at_every_version() -> TestResult {
    let h = harness(0)?;
    h.topic("t", 3)?;
    h.topic("u", 1)?;
    let r = h
        .coord
        .offset_commit(
            commit_req(
                "g",
                "",
                -1,
                &[("t", 0, 10, "m0"), ("t", 2, 30, ""), ("u", 0, 5, "mu")],
            ),
            8,
        )
        .await;
    assert_eq!(
        codes(&r),
        vec![
            ("t".into(), 0, NONE),
            ("t".into(), 2, NONE),
            ("u".into(), 0, NONE)
        ]
    );
    for version in 2..=7 {
        let r = h
            .coord
            .offset_fetch(fetch_v7("g", Some(&[("t", &[0, 1, 2])])), version);
        assert_eq!(r.error_code, NONE);
        assert_eq!(
            fetched(&r),
            vec![
                row("t", 0, 10, "m0", 7),
                row("t", 1, -1, "", -1),
                row("t", 2, 30, "", 7)
            ],
            "v{version}"
        );
    }
    // null topics = everything the group committed
    let all = h.coord.offset_fetch(fetch_v7("g", None), 7);
    assert_eq!(
        fetched(&all),
        vec![
            row("t", 0, 10, "m0", 7),
            row("t", 2, 30, "", 7),
            row("u", 0, 5, "mu", 7)
        ]
    );
    // v8+: several groups in one request
    let req = OffsetFetchRequest::default().with_groups(vec![
        OffsetFetchRequestGroup::default()
            .with_group_id(gid("g"))
            .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                .with_name(tn("u"))
                .with_partition_indexes(vec![0])])),
        OffsetFetchRequestGroup::default()
            .with_group_id(gid("nobody"))
            .with_topics(None),
    ]);
    for version in [8, 9] {
        let r = h.coord.offset_fetch(req.clone(), version);
        assert_eq!(r.groups.len(), 2);
        assert_eq!(r.groups[0].group_id.as_str(), "g");
        let p = &r.groups[0].topics[0].partitions[0];
        assert_eq!((p.committed_offset, p.metadata.as_deref()), (5, Some("mu")));
        assert_eq!(r.groups[1].group_id.as_str(), "nobody");
        assert!(r.groups[1].topics.is_empty());
        assert_eq!(r.groups[1].error_code, NONE);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_are_checked_like_kafka() -> TestResult {
    let h = harness(0)?;
    h.topic("t", 2)?;
    let one = |g: &str, m: &str, gen: i32| commit_req(g, m, gen, &[("t", 0, 1, "")]);
    let code = |r: OffsetCommitResponse| r.topics[0].partitions[0].error_code;
    // no such group: only simple commits
    assert_eq!(
        code(h.coord.offset_commit(one("g", "m", 3), 8).await),
        ILLEGAL_GENERATION
    );
    assert_eq!(
        code(h.coord.offset_commit(one("", "", -1), 8).await),
        INVALID_GROUP_ID
    );
    let (a, b) = pair(&h.coord, "g", 10_000, 5_000, RANGE).await?;
    let (a_id, b_id) = (a.member_id.to_string(), b.member_id.to_string());
    // CompletingRebalance: wait for your assignment first
    assert_eq!(
        code(h.coord.offset_commit(one("g", &a_id, 2), 8).await),
        REBALANCE_IN_PROGRESS
    );
    let plan: &[(&str, &[u8])] = &[(&a_id, b"A"), (&b_id, b"B")];
    let sa = sync(&h.coord, sync_req("g", &a_id, 2, plan));
    let sb = sync(&h.coord, sync_req("g", &b_id, 2, plan));
    sa.await?;
    sb.await?;
    assert_eq!(
        code(h.coord.offset_commit(one("g", &a_id, 2), 8).await),
        NONE
    );
    assert_eq!(
        code(h.coord.offset_commit(one("g", &a_id, 1), 8).await),
        ILLEGAL_GENERATION
    );
    assert_eq!(
        code(h.coord.offset_commit(one("g", "ghost", 2), 8).await),
        UNKNOWN_MEMBER_ID
    );
    // a simple commit while the group has members is refused (Kafka: unknown member)
    assert_eq!(
        code(h.coord.offset_commit(one("g", "", -1), 8).await),
        UNKNOWN_MEMBER_ID
    );
    // what does not exist, and metadata over offset.metadata.max.bytes
    let bad = commit_req(
        "g",
        &a_id,
        2,
        &[
            ("t", 5, 1, ""),
            ("nope", 0, 1, ""),
            ("t", 1, 9, &"x".repeat(4097)),
            ("t", 0, 4, "ok"),
        ],
    );
    assert_eq!(
        codes(&h.coord.offset_commit(bad, 8).await),
        vec![
            ("t".into(), 5, UNKNOWN_TOPIC_OR_PARTITION),
            ("t".into(), 1, OFFSET_METADATA_TOO_LARGE),
            ("t".into(), 0, NONE),
            ("nope".into(), 0, UNKNOWN_TOPIC_OR_PARTITION),
        ]
    );
    assert_eq!(h.log.groups().committed("g", "t", 0), Some(4));
    assert_eq!(h.log.groups().committed("g", "t", 1), None);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_and_embedded_groups_share_offsets_and_they_survive_a_restart() -> TestResult {
    let h = harness(0)?;
    h.topic("t", 1)?;
    let topic = h.log.get_topic("t")?;
    for i in 0..10i64 {
        topic.produce(
            None,
            Some(format!("v{i}").as_bytes()),
            1000 + i,
            &[],
            Some(0),
        )?;
    }
    let r = h
        .coord
        .offset_commit(commit_req("shared", "", -1, &[("t", 0, 6, "k")]), 8)
        .await;
    assert_eq!(codes(&r), vec![("t".into(), 0, NONE)]);
    // the embedded consumer of the same group starts where the Kafka client committed
    let c = Consumer::new(&h.log, topic.clone(), Some("shared"), StartSpec::Earliest)?;
    let mut seen = Vec::new();
    let mut sink = Collect(&mut seen);
    c.poll(100, std::time::Duration::ZERO, &mut sink)?;
    assert_eq!(seen, vec![6, 7, 8, 9]);
    c.commit()?;
    c.close()?;
    let r = h
        .coord
        .offset_fetch(fetch_v7("shared", Some(&[("t", &[0])])), 7);
    assert_eq!(fetched(&r)[0].2, 10);
    assert_eq!(
        h.coord.committed_offsets(),
        vec![CommittedOffset {
            group: "shared".into(),
            topic: "t".into(),
            partition: 0,
            offset: 10
        }]
    );
    h.coord
        .offset_commit(commit_req("k", "", -1, &[("t", 0, 3, "meta")]), 2)
        .await;
    // restart: a new log and coordinator see the same commits
    let Harness { dir, log, coord } = h;
    coord.shutdown();
    drop(coord);
    log.close()?;
    drop(log);
    let log = Log::open(dir.path(), log_options())?;
    let coord = Coordinator::new(log.clone(), &config(0))?;
    let r = coord.offset_fetch(fetch_v7("k", None), 7);
    assert_eq!(fetched(&r), vec![row("t", 0, 3, "meta", 7)]);
    let r = coord.offset_fetch(fetch_v7("shared", None), 7);
    assert_eq!(fetched(&r)[0].2, 10);
    Ok(())
}

struct Collect<'a>(&'a mut Vec<i64>);

impl riverbed_log::RecordSink for Collect<'_> {
    fn push(&mut self, _partition: u32, r: &riverbed_log::batch::RecordView<'_>) {
        self.0.push(r.offset);
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn clear(&mut self) {
        self.0.clear();
    }
}

fn delete_req(group: &str, parts: &[(&str, i32)]) -> OffsetDeleteRequest {
    let mut topics: Vec<OffsetDeleteRequestTopic> = Vec::new();
    for (t, p) in parts {
        let part = OffsetDeleteRequestPartition::default().with_partition_index(*p);
        match topics.iter_mut().find(|x| x.name.as_str() == *t) {
            Some(x) => x.partitions.push(part),
            None => topics.push(
                OffsetDeleteRequestTopic::default()
                    .with_name(tn(t))
                    .with_partitions(vec![part]),
            ),
        }
    }
    OffsetDeleteRequest::default()
        .with_group_id(gid(group))
        .with_topics(topics)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_delete_keeps_subscribed_topics() -> TestResult {
    let h = harness(0)?;
    h.topic("t", 1)?;
    h.topic("u", 1)?;
    let r = h.coord.offset_delete(delete_req("g", &[("u", 0)]), 0).await;
    assert_eq!(r.error_code, GROUP_ID_NOT_FOUND);
    h.coord
        .offset_commit(
            commit_req("g", "", -1, &[("t", 0, 1, ""), ("u", 0, 2, "")]),
            8,
        )
        .await;
    // members subscribed to "t" only
    let (a_id, _) = stable_pair(&h.coord, "g", 10_000, 5_000, RANGE).await?;
    let r = h
        .coord
        .offset_delete(delete_req("g", &[("t", 0), ("u", 0), ("u", 3)]), 0)
        .await;
    assert_eq!(r.error_code, NONE);
    let got: Vec<(String, i32, i16)> = r
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.to_string(), p.partition_index, p.error_code))
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("t".into(), 0, GROUP_SUBSCRIBED_TO_TOPIC),
            ("u".into(), 0, NONE),
            ("u".into(), 3, UNKNOWN_TOPIC_OR_PARTITION)
        ]
    );
    assert_eq!(h.log.groups().committed("g", "t", 0), Some(1));
    assert_eq!(h.log.groups().committed("g", "u", 0), None);
    assert!(!a_id.is_empty());
    Ok(())
}
