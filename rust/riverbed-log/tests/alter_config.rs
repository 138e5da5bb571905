//! Changing a topic's settings: durable (topic.json), seen by every partition, checked like a
//! new topic's, with `validate_only` changing nothing.

use riverbed_log::{Cleanup, Log, LogError, LogOptions, TopicOptions};

#[test]
fn settings_change_durably_and_reach_the_partitions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), LogOptions::default()).expect("log");
    let t = log
        .topic(
            "t",
            &TopicOptions {
                partitions: Some(2),
                ..Default::default()
            },
        )
        .expect("topic");
    t.produce(Some(b"k"), Some(b"v"), 1, &[], Some(0))
        .expect("produce");
    let ask = TopicOptions {
        retention_ms: Some(Some(60_000)),
        segment_bytes: Some(4096),
        ..Default::default()
    };
    let dry = log
        .alter_topic_config("t", &ask, true)
        .expect("validate only");
    assert_eq!(
        dry.config().retention_ms,
        None,
        "validate_only changed the topic"
    );
    let changed = log.alter_topic_config("t", &ask, false).expect("alter");
    assert_eq!(changed.config().retention_ms, Some(60_000));
    assert_eq!(
        changed.partition(1).expect("p1").config().segment_bytes,
        4096
    );
    // Handles taken before share the partitions, which use the new settings.
    assert_eq!(
        t.partition(0).expect("p0").config().retention_ms,
        Some(60_000)
    );
    assert!(matches!(
        log.alter_topic_config(
            "t",
            &TopicOptions {
                segment_bytes: Some(10),
                ..Default::default()
            },
            false
        ),
        Err(LogError::InvalidArgument(_))
    ));
    assert!(matches!(
        log.alter_topic_config(
            "t",
            &TopicOptions {
                partitions: Some(3),
                ..Default::default()
            },
            false
        ),
        Err(LogError::InvalidArgument(_))
    ));
    log.alter_topic_config(
        "t",
        &TopicOptions {
            cleanup: Some(Cleanup::Compact),
            ..Default::default()
        },
        false,
    )
    .expect("delete -> compact");
    assert!(matches!(
        log.alter_topic_config(
            "t",
            &TopicOptions {
                cleanup: Some(Cleanup::Delete),
                ..Default::default()
            },
            false
        ),
        Err(LogError::InvalidArgument(_))
    ));
    log.close().expect("close");
    let log = Log::open(dir.path(), LogOptions::default()).expect("reopen");
    let t = log.get_topic("t").expect("t");
    assert_eq!(t.config().retention_ms, Some(60_000));
    assert_eq!(t.config().segment_bytes, 4096);
    assert_eq!(t.config().cleanup, Cleanup::Compact);
    assert_eq!(t.partition(0).expect("p0").offsets(), (0, 1));
}
