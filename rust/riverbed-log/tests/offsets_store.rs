//! The committed-offset store shared by the embedded groups and the broker's group coordinator:
//! metadata and leader epochs kept, batched commits, deletions, all durable across a reopen.

mod common;

use common::*;
use riverbed_log::group::NewCommit;
use riverbed_log::{Consumer, StartSpec, TopicOptions};

fn commit(topic: &str, partition: u32, offset: i64, metadata: &str, epoch: i32) -> NewCommit {
    NewCommit {
        topic: topic.into(),
        partition,
        offset,
        metadata: metadata.into(),
        leader_epoch: epoch,
    }
}

#[test]
fn entries_keep_metadata_and_survive_reopen() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let log = open(dir.path());
        let g = log.groups();
        g.commit_entries(
            &log,
            "kg",
            &[commit("a", 0, 7, "m-a0", 3), commit("b", 2, 11, "", -1)],
        )?;
        // a later commit of the same key wins
        g.commit_entries(&log, "kg", &[commit("a", 0, 9, "m-a0-2", 4)])?;
        g.commit(&log, "other", "a", &[(1, 5)])?;
        log.close()?;
    }
    let log = open(dir.path());
    let g = log.groups();
    let e = g.committed_entry("kg", "a", 0).ok_or("lost a/0")?;
    assert_eq!(
        (e.offset, e.metadata.as_str(), e.leader_epoch),
        (9, "m-a0-2", 4)
    );
    assert_eq!(g.committed("kg", "b", 2), Some(11));
    assert_eq!(g.committed("kg", "b", 1), None);
    let offsets = g.group_offsets("kg");
    let keys: Vec<(String, u32)> = offsets.keys().cloned().collect();
    assert_eq!(keys, vec![("a".to_string(), 0), ("b".to_string(), 2)]);
    let groups: Vec<String> = g.groups_with_offsets().into_iter().collect();
    assert_eq!(groups, vec!["kg".to_string(), "other".to_string()]);
    assert_eq!(
        g.all_offsets().get(&("other".into(), "a".into(), 1)),
        Some(&5)
    );
    log.close()?;
    Ok(())
}

#[test]
fn deletions_are_durable() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let log = open(dir.path());
        let g = log.groups();
        g.commit_entries(
            &log,
            "kg",
            &[
                commit("a", 0, 1, "", -1),
                commit("a", 1, 2, "", -1),
                commit("b", 0, 3, "", -1),
            ],
        )?;
        g.commit(&log, "gone", "a", &[(0, 4)])?;
        // a key that was never committed is not counted
        let n = g.delete_offsets(&log, "kg", &[("a".into(), 1), ("a".into(), 9)])?;
        assert_eq!(n, 1);
        assert_eq!(g.delete_group_offsets(&log, "gone")?, 1);
        log.close()?;
    }
    let log = open(dir.path());
    let g = log.groups();
    assert_eq!(g.committed("kg", "a", 0), Some(1));
    assert_eq!(g.committed("kg", "a", 1), None);
    assert_eq!(g.committed("kg", "b", 0), Some(3));
    assert_eq!(g.committed("gone", "a", 0), None);
    assert!(!g.groups_with_offsets().contains("gone"));
    log.close()?;
    Ok(())
}

#[test]
fn embedded_consumer_starts_at_an_entry_committed_with_metadata() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    let topic = log.topic(
        "t",
        &TopicOptions {
            partitions: Some(1),
            ..Default::default()
        },
    )?;
    for i in 0..10i64 {
        topic.produce(
            None,
            Some(format!("v{i}").as_bytes()),
            1000 + i,
            &[],
            Some(0),
        )?;
    }
    log.groups()
        .commit_entries(&log, "shared", &[commit("t", 0, 6, "from-kafka", 0)])?;
    let c = Consumer::new(&log, topic.clone(), Some("shared"), StartSpec::Earliest)?;
    let got = drain(&c)?;
    let offsets: Vec<i64> = got.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, vec![6, 7, 8, 9]);
    c.commit()?;
    let e = log
        .groups()
        .committed_entry("shared", "t", 0)
        .ok_or("no commit")?;
    assert_eq!(e.offset, 10);
    assert!(log.groups().live_groups().contains("shared"));
    assert!(log.groups().member_topics("shared").contains("t"));
    drop(c);
    log.close()?;
    Ok(())
}
