//! Growing a topic (Kafka's CreatePartitions): durable across a reopen, existing partitions and
//! their records untouched, and an interrupted increase (directories made, topic.json not yet
//! rewritten) rolled back on open instead of making the topic unavailable.

use riverbed_log::{Log, LogError, LogOptions, TopicOptions};

#[test]
fn partitions_are_added_durably_and_old_handles_keep_working() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), LogOptions::default()).expect("log");
    let old = log
        .topic(
            "t",
            &TopicOptions {
                partitions: Some(2),
                ..Default::default()
            },
        )
        .expect("topic");
    old.produce(Some(b"a"), Some(b"1"), 1, &[], Some(1))
        .expect("produce");
    let grown = log.add_partitions("t", 5).expect("grow");
    assert_eq!(grown.num_partitions(), 5);
    assert_eq!(log.get_topic("t").expect("t").num_partitions(), 5);
    // The old handle shares partitions 0 and 1 (one writer per file), so its appends land
    // where the grown topic reads.
    old.produce(Some(b"b"), Some(b"2"), 2, &[], Some(1))
        .expect("produce");
    assert_eq!(grown.partition(1).expect("p1").offsets(), (0, 2));
    grown
        .produce(Some(b"c"), Some(b"3"), 3, &[], Some(4))
        .expect("produce");
    assert!(matches!(
        log.add_partitions("t", 3),
        Err(LogError::InvalidArgument(_))
    ));
    assert!(matches!(
        log.add_partitions("__consumer_offsets", 90),
        Err(LogError::InternalTopic(_))
    ));
    log.close().expect("close");

    let log = Log::open(dir.path(), LogOptions::default()).expect("reopen");
    let t = log.get_topic("t").expect("t");
    assert_eq!(t.num_partitions(), 5);
    assert_eq!(t.partition(1).expect("p1").offsets(), (0, 2));
    assert_eq!(t.partition(4).expect("p4").offsets(), (0, 1));
    // Deleting the topic stops the handles taken before it grew too.
    let before = t.clone();
    log.add_partitions("t", 6).expect("grow");
    log.delete_topic("t").expect("delete");
    assert!(matches!(
        before.produce(Some(b"d"), Some(b"4"), 4, &[], Some(0)),
        Err(LogError::TopicNotFound(_))
    ));
}

#[test]
fn an_interrupted_increase_is_rolled_back_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
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
        t.produce(Some(b"a"), Some(b"1"), 1, &[], Some(0))
            .expect("produce");
        log.close().expect("close");
    }
    // The state a crash between the new directories and topic.json leaves.
    for p in 2..4 {
        let pdir = dir.path().join("t").join(p.to_string());
        std::fs::create_dir(&pdir).expect("dir");
        std::fs::File::create(pdir.join("00000000000000000000.log")).expect("segment");
    }
    let log = Log::open(dir.path(), LogOptions::default()).expect("reopen");
    let t = log.get_topic("t").expect("topic stays available");
    assert_eq!(t.num_partitions(), 2);
    assert_eq!(t.partition(0).expect("p0").offsets(), (0, 1));
    assert!(!dir.path().join("t/2").exists());
    assert!(log
        .open_report()
        .iter()
        .any(|d| d.kind == "partitions_add_rolled_back"));
    // Extra directories holding records are not ours to remove: the topic is unavailable.
    drop(t);
    log.close().expect("close");
    let pdir = dir.path().join("t/2");
    std::fs::create_dir(&pdir).expect("dir");
    std::fs::write(pdir.join("00000000000000000000.log"), b"not empty").expect("write");
    let log = Log::open(dir.path(), LogOptions::default()).expect("reopen");
    assert!(log.get_topic("t").is_err());
    assert!(pdir.join("00000000000000000000.log").exists());
}
