//! One writer per directory: a second open fails with `Locked` while the first is open.

mod common;

use common::*;
use riverbed_log::{Log, LogError, LogOptions, NewRecord, TopicOptions};

#[test]
fn second_open_is_locked_until_close() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    let topic = log.topic("t", &TopicOptions::default())?;
    topic.produce(None, Some(b"one"), 1, &[], None)?;
    match Log::open(dir.path(), fast_options()) {
        Err(LogError::Locked { path, pid, served }) => {
            assert_eq!(path, dir.path());
            assert_eq!(served, None);
            assert_eq!(
                pid,
                std::process::id().to_string(),
                "the lock file names the owner"
            );
        }
        other => panic!("second open gave {other:?}"),
    }
    // the failed open changed nothing: the first log still works
    assert_eq!(topic.produce(None, Some(b"two"), 2, &[], None)?.1, 1);
    assert_eq!(
        std::fs::read_to_string(dir.path().join(".lock"))?,
        std::process::id().to_string()
    );
    // a served log tells the second opener where to connect instead; clearing it stops that
    log.advertise_served_at(Some("127.0.0.1:19092"))?;
    match Log::open(dir.path(), fast_options()) {
        Err(e @ LogError::Locked { .. }) => {
            let LogError::Locked { served, .. } = &e else {
                unreachable!()
            };
            assert_eq!(served.as_deref(), Some("127.0.0.1:19092"));
            assert!(
                e.to_string().contains("bootstrap servers 127.0.0.1:19092"),
                "{e}"
            );
        }
        other => panic!("second open gave {other:?}"),
    }
    // one server at a time
    assert!(log.advertise_served_at(Some("127.0.0.1:19093")).is_err());
    assert_eq!(log.served_at().as_deref(), Some("127.0.0.1:19092"));
    log.advertise_served_at(None)?;
    assert_eq!(log.served_at(), None);
    match Log::open(dir.path(), fast_options()) {
        Err(LogError::Locked { served: None, .. }) => {}
        other => panic!("second open gave {other:?}"),
    }
    // closing releases the lock; closing twice is fine
    log.close()?;
    log.close()?;
    assert!(log.is_closed());
    assert!(matches!(
        log.topic("t", &TopicOptions::default()),
        Err(LogError::Closed)
    ));
    assert!(matches!(log.cleanup(), Err(LogError::Closed)));
    let again = Log::open(dir.path(), fast_options())?;
    assert_eq!(again.get_topic("t")?.offsets()?, vec![(0, 2)]);
    assert!(matches!(
        Log::open(dir.path(), fast_options()),
        Err(LogError::Locked { .. })
    ));
    again.close()?;
    Ok(())
}

#[test]
fn locked_with_default_options_and_background_thread() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = Log::open(dir.path(), LogOptions::default())?;
    assert!(matches!(
        Log::open(dir.path(), LogOptions::default()),
        Err(LogError::Locked { .. })
    ));
    let t0 = std::time::Instant::now();
    log.close()?;
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(1),
        "close does not wait for the background tick"
    );
    let again = Log::open(dir.path(), LogOptions::default())?;
    again.close()?;
    Ok(())
}

/// Dropping every handle of an open log (without `close`) must release the directory, as the
/// process exiting would. The background thread holds a strong reference while it sleeps, so
/// with the default 30 s cleanup interval the lock outlives the last handle by up to 30 s.
#[test]
fn dropping_the_log_releases_the_lock() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = Log::open(dir.path(), LogOptions::default())?;
    assert_eq!(
        LogOptions::default().cleanup_interval,
        Some(std::time::Duration::from_secs(30))
    );
    let topic = log.topic("t", &TopicOptions::default())?;
    topic.produce(None, Some(b"kept"), 1, &[], None)?;
    let other = log.clone();
    drop(topic);
    drop(log);
    drop(other);
    // no close(): the lock must go with the last handle, not with the next background tick
    let t0 = std::time::Instant::now();
    let again = loop {
        match Log::open(dir.path(), LogOptions::default()) {
            Ok(l) => break l,
            Err(LogError::Locked { .. }) if t0.elapsed() < std::time::Duration::from_secs(1) => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!(
                "the lock outlived the dropped log for {:?}: {e}",
                t0.elapsed()
            ),
        }
    };
    assert_eq!(again.get_topic("t")?.offsets()?, vec![(0, 1)]);
    again.close()?;
    Ok(())
}

#[test]
fn topic_handles_refuse_writes_after_close() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    let topic = log.topic(
        "t",
        &TopicOptions {
            partitions: Some(2),
            ..Default::default()
        },
    )?;
    for i in 0..10u8 {
        topic.produce(
            Some(&[i]),
            Some(b"before"),
            i64::from(i),
            &[],
            Some(u32::from(i % 2)),
        )?;
    }
    let part = topic.partition(0)?.clone();
    log.close()?;

    assert!(matches!(
        topic.produce(Some(b"k"), Some(b"after"), 100, &[], None),
        Err(LogError::Closed)
    ));
    assert!(matches!(
        topic.produce(None, Some(b"after"), 100, &[], Some(1)),
        Err(LogError::Closed)
    ));
    let one = [NewRecord {
        timestamp: 100,
        key: Some(b"k"),
        value: Some(b"after"),
        headers: &[],
    }];
    // one busy partition (written inline) and two (written on threads)
    assert!(matches!(
        topic.produce_routed(&[one.to_vec(), Vec::new()]),
        Err(LogError::Closed)
    ));
    assert!(matches!(
        topic.produce_routed(&[one.to_vec(), one.to_vec()]),
        Err(LogError::Closed)
    ));
    assert!(matches!(part.append(one), Err(LogError::Closed)));
    assert_eq!(
        topic.offsets()?,
        vec![(0, 5), (0, 5)],
        "nothing was appended after close"
    );
    drop(part);
    drop(topic);

    let log = open(dir.path());
    assert!(log.open_report().is_empty(), "{:?}", log.open_report());
    let topic = log.get_topic("t")?;
    assert_eq!(topic.offsets()?, vec![(0, 5), (0, 5)]);
    for p in 0..2u32 {
        let recs = read_all(topic.partition(p)?)?;
        let keys: Vec<u8> = recs
            .iter()
            .filter_map(|r| r.key.as_ref().and_then(|k| k.first().copied()))
            .collect();
        assert_eq!(
            keys,
            (0..10u8)
                .filter(|i| u32::from(i % 2) == p)
                .collect::<Vec<_>>()
        );
        assert!(recs
            .iter()
            .all(|r| r.value.as_deref() == Some(&b"before"[..])));
    }
    log.close()?;
    Ok(())
}
