//! The classic group protocol driven directly on the Coordinator: JoinGroup / SyncGroup /
//! Heartbeat / LeaveGroup through every state transition, with timeouts in milliseconds.

mod group_support;

use std::time::{Duration, Instant};

use group_support::*;
use riverbed_server::groups::GroupState;

const RANGE: &[(&str, &[&str])] = &[("range", &["t"])];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_member_needs_an_id_then_leads_alone() -> TestResult {
    let h = harness(0)?;
    let first = h
        .coord
        .join_group(join_req("g", "", 10_000, 10_000, RANGE), 5, &client("c1"))
        .await;
    assert_eq!(first.error_code, MEMBER_ID_REQUIRED);
    let id = first.member_id.to_string();
    assert!(id.starts_with("c1-") && id.len() > 10, "{id}");
    // The member id is not a member until it joins with it.
    assert_eq!(heartbeat(&h.coord, "g", &id, 0), UNKNOWN_MEMBER_ID);
    let r = h
        .coord
        .join_group(join_req("g", &id, 10_000, 10_000, RANGE), 5, &client("c1"))
        .await;
    assert_eq!(r.error_code, NONE);
    assert_eq!(r.generation_id, 1);
    assert_eq!(r.member_id.as_str(), id);
    assert_eq!(r.leader.as_str(), id);
    assert_eq!(r.protocol_name.as_deref(), Some("range"));
    assert_eq!(member_ids(&r), vec![id.clone()]);
    assert_eq!(r.members[0].metadata, subscription(&["t"]));
    assert_eq!(
        h.coord.group_state("g"),
        Some(GroupState::CompletingRebalance)
    );
    let s = h
        .coord
        .sync_group(sync_req("g", &id, 1, &[(&id, b"A1")]), 5)
        .await;
    assert_eq!(s.error_code, NONE);
    assert_eq!(&s.assignment[..], b"A1");
    assert_eq!(h.coord.group_state("g"), Some(GroupState::Stable));
    assert_eq!(heartbeat(&h.coord, "g", &id, 1), NONE);
    assert_eq!(heartbeat(&h.coord, "g", &id, 0), ILLEGAL_GENERATION);
    assert_eq!(heartbeat(&h.coord, "g", "nobody", 1), UNKNOWN_MEMBER_ID);
    assert_eq!(heartbeat(&h.coord, "other", &id, 1), UNKNOWN_MEMBER_ID);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_before_v4_gets_an_id_at_once() -> TestResult {
    let h = harness(0)?;
    let r = h
        .coord
        .join_group(join_req("g", "", 10_000, 10_000, RANGE), 3, &client("old"))
        .await;
    assert_eq!(r.error_code, NONE);
    assert!(r.member_id.starts_with("old-"));
    assert_eq!(r.generation_id, 1);
    // v0 has no rebalance timeout; a known member id of an unknown group is refused.
    let r = h
        .coord
        .join_group(
            join_req("nope", "x-1", 10_000, -1, RANGE),
            0,
            &client("old"),
        )
        .await;
    assert_eq!(r.error_code, UNKNOWN_MEMBER_ID);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_joins_are_refused() -> TestResult {
    let h = harness(0)?;
    let c = client("c");
    let r = h
        .coord
        .join_group(join_req("g", "", 5, 1000, RANGE), 5, &c)
        .await;
    assert_eq!(r.error_code, INVALID_SESSION_TIMEOUT);
    let r = h
        .coord
        .join_group(join_req("g", "", 60_001, 1000, RANGE), 5, &c)
        .await;
    assert_eq!(r.error_code, INVALID_SESSION_TIMEOUT);
    let r = h
        .coord
        .join_group(join_req("", "", 1000, 1000, RANGE), 5, &c)
        .await;
    assert_eq!(r.error_code, INVALID_GROUP_ID);
    let r = h
        .coord
        .join_group(join_req("g", "", 1000, 1000, &[]), 5, &c)
        .await;
    assert_eq!(r.error_code, INCONSISTENT_GROUP_PROTOCOL);
    // an answer to v0-v6 carries a (non-null) protocol name
    let r = h
        .coord
        .join_group(join_req("g", "", 5, 1000, RANGE), 6, &c)
        .await;
    assert_eq!(r.protocol_name.as_deref(), Some(""));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_member_rebalances_and_leader_assigns() -> TestResult {
    let h = harness(0)?;
    let a = join_new(&h.coord, "g", "a", 10_000, 5_000, RANGE)
        .await?
        .await?;
    let a_id = a.member_id.to_string();
    assert_eq!(a.generation_id, 1);
    let s = h
        .coord
        .sync_group(sync_req("g", &a_id, 1, &[(&a_id, b"all")]), 5)
        .await;
    assert_eq!(&s.assignment[..], b"all");

    // b joins: the group waits for a to rejoin
    let b_task = join_new(&h.coord, "g", "b", 10_000, 5_000, RANGE).await?;
    assert!(still_waiting(&b_task, 100).await);
    assert_eq!(
        h.coord.group_state("g"),
        Some(GroupState::PreparingRebalance)
    );
    assert_eq!(heartbeat(&h.coord, "g", &a_id, 1), REBALANCE_IN_PROGRESS);
    let s = h.coord.sync_group(sync_req("g", &a_id, 1, &[]), 5).await;
    assert_eq!(s.error_code, REBALANCE_IN_PROGRESS);
    let a2 = rejoin(&h.coord, "g", &a_id, 10_000, 5_000, RANGE).await?;
    let b = b_task.await?;
    let b_id = b.member_id.to_string();
    assert_eq!((a2.error_code, b.error_code), (NONE, NONE));
    assert_eq!((a2.generation_id, b.generation_id), (2, 2));
    // the leader stays the leader and sees both members; the follower sees none
    assert_eq!(a2.leader.as_str(), a_id);
    assert_eq!(b.leader.as_str(), a_id);
    let mut both = vec![a_id.clone(), b_id.clone()];
    both.sort();
    assert_eq!(member_ids(&a2), both);
    assert!(b.members.is_empty());

    // the follower's SyncGroup waits for the leader's
    let b_sync = sync(&h.coord, sync_req("g", &b_id, 2, &[]));
    assert!(still_waiting(&b_sync, 100).await);
    assert_eq!(
        h.coord.group_state("g"),
        Some(GroupState::CompletingRebalance)
    );
    let stale = h.coord.sync_group(sync_req("g", &b_id, 1, &[]), 5).await;
    assert_eq!(stale.error_code, ILLEGAL_GENERATION);
    let a_sync = h
        .coord
        .sync_group(
            sync_req("g", &a_id, 2, &[(&a_id, b"p0,p1"), (&b_id, b"p2,p3")]),
            5,
        )
        .await;
    let b_sync = b_sync.await?;
    assert_eq!((a_sync.error_code, b_sync.error_code), (NONE, NONE));
    assert_eq!(&a_sync.assignment[..], b"p0,p1");
    assert_eq!(&b_sync.assignment[..], b"p2,p3");
    assert_eq!(a_sync.protocol_name.as_deref(), Some("range"));
    assert_eq!(h.coord.group_state("g"), Some(GroupState::Stable));
    assert_eq!(heartbeat(&h.coord, "g", &b_id, 2), NONE);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_is_one_every_member_supports() -> TestResult {
    let h = harness(0)?;
    let a_protocols: &[(&str, &[&str])] = &[("roundrobin", &["t"]), ("range", &["t"])];
    let b_protocols: &[(&str, &[&str])] = &[("range", &["t"]), ("cooperative-sticky", &["t"])];
    let a = join_new(&h.coord, "g", "a", 10_000, 5_000, a_protocols)
        .await?
        .await?;
    let a_id = a.member_id.to_string();
    assert_eq!(a.protocol_name.as_deref(), Some("roundrobin"));
    h.coord.sync_group(sync_req("g", &a_id, 1, &[]), 5).await;
    // nothing in common with the group: refused
    let c = h
        .coord
        .join_group(
            join_req("g", "", 10_000, 5_000, &[("sticky", &["t"])]),
            5,
            &client("c"),
        )
        .await;
    assert_eq!(c.error_code, INCONSISTENT_GROUP_PROTOCOL);
    // another protocol type: refused
    let other = join_req("g", "", 10_000, 5_000, RANGE).with_protocol_type(s("connect"));
    let c = h.coord.join_group(other, 5, &client("c")).await;
    assert_eq!(c.error_code, INCONSISTENT_GROUP_PROTOCOL);
    let b_task = join_new(&h.coord, "g", "b", 10_000, 5_000, b_protocols).await?;
    wait_state(&h.coord, "g", GroupState::PreparingRebalance).await;
    let a2 = rejoin(&h.coord, "g", &a_id, 10_000, 5_000, a_protocols).await?;
    let b = b_task.await?;
    assert_eq!(a2.protocol_name.as_deref(), Some("range"));
    assert_eq!(b.protocol_name.as_deref(), Some("range"));
    // the leader gets each member's metadata for the chosen protocol
    assert!(a2
        .members
        .iter()
        .all(|m| m.metadata == subscription(&["t"])));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_member_is_evicted_after_its_session_timeout() -> TestResult {
    let h = harness(0)?;
    let (a_id, b_id) = stable_pair(&h.coord, "g", 300, 2_000, RANGE).await?;
    // a heartbeats every 50 ms; b stops (as a kill -9ed consumer does)
    let started = Instant::now();
    let mut seen = NONE;
    while started.elapsed() < Duration::from_secs(3) {
        seen = heartbeat(&h.coord, "g", &a_id, 2);
        if seen != NONE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let waited = started.elapsed();
    assert_eq!(seen, REBALANCE_IN_PROGRESS);
    assert!(
        waited >= Duration::from_millis(250),
        "evicted after {waited:?}"
    );
    assert!(
        waited < Duration::from_millis(1500),
        "evicted after {waited:?}"
    );
    assert_eq!(heartbeat(&h.coord, "g", &b_id, 2), UNKNOWN_MEMBER_ID);
    let a2 = rejoin(&h.coord, "g", &a_id, 300, 2_000, RANGE).await?;
    assert_eq!(a2.generation_id, 3);
    assert_eq!(member_ids(&a2), vec![a_id.clone()]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_that_does_not_rejoin_within_the_rebalance_timeout_is_removed() -> TestResult {
    let h = harness(0)?;
    let a = join_new(&h.coord, "g", "a", 10_000, 400, RANGE)
        .await?
        .await?;
    let a_id = a.member_id.to_string();
    h.coord.sync_group(sync_req("g", &a_id, 1, &[]), 5).await;
    let b = join_new(&h.coord, "g", "b", 10_000, 400, RANGE).await?;
    let started = Instant::now();
    // a keeps heartbeating (told to rejoin) but never rejoins
    let mut told = 0;
    while !b.is_finished() && started.elapsed() < Duration::from_secs(3) {
        if heartbeat(&h.coord, "g", &a_id, 1) == REBALANCE_IN_PROGRESS {
            told += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let b = b.await?;
    let waited = started.elapsed();
    assert!(told >= 3);
    assert!(
        waited >= Duration::from_millis(350),
        "join completed after {waited:?}"
    );
    assert_eq!(b.error_code, NONE);
    assert_eq!(b.generation_id, 2);
    assert_eq!(b.leader, b.member_id);
    assert_eq!(member_ids(&b), vec![b.member_id.to_string()]);
    assert_eq!(heartbeat(&h.coord, "g", &a_id, 1), UNKNOWN_MEMBER_ID);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_that_never_syncs_is_removed_and_followers_rejoin() -> TestResult {
    let h = harness(0)?;
    let (a, b) = pair(&h.coord, "g", 10_000, 300, RANGE).await?;
    let leader = a.leader.to_string();
    let follower = if leader == a.member_id.as_str() {
        b.member_id.to_string()
    } else {
        a.member_id.to_string()
    };
    let started = Instant::now();
    let waiting = h
        .coord
        .sync_group(sync_req("g", &follower, 2, &[]), 5)
        .await;
    assert_eq!(waiting.error_code, REBALANCE_IN_PROGRESS);
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(heartbeat(&h.coord, "g", &leader, 2), UNKNOWN_MEMBER_ID);
    let again = rejoin(&h.coord, "g", &follower, 10_000, 300, RANGE).await?;
    assert_eq!(again.generation_id, 3);
    assert_eq!(again.leader.as_str(), follower);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_group_single_and_batched() -> TestResult {
    let h = harness(0)?;
    let (a_id, b_id) = stable_pair(&h.coord, "g", 10_000, 2_000, RANGE).await?;
    let r = h
        .coord
        .leave_group(leave_v3("g", &[(&b_id, None), ("ghost", None)]), 3);
    let codes: Vec<(String, i16)> = r
        .members
        .iter()
        .map(|m| (m.member_id.to_string(), m.error_code))
        .collect();
    assert_eq!(
        codes,
        vec![
            (b_id.clone(), NONE),
            ("ghost".to_string(), UNKNOWN_MEMBER_ID)
        ]
    );
    assert_eq!(r.error_code, NONE);
    assert_eq!(
        h.coord.group_state("g"),
        Some(GroupState::PreparingRebalance)
    );
    let a2 = rejoin(&h.coord, "g", &a_id, 10_000, 2_000, RANGE).await?;
    assert_eq!((a2.generation_id, member_ids(&a2)), (3, vec![a_id.clone()]));
    // v0: one member, the answer's only error is the top-level one
    let v0 = kafka_protocol::messages::LeaveGroupRequest::default()
        .with_group_id(gid("g"))
        .with_member_id(s(&a_id));
    assert_eq!(h.coord.leave_group(v0.clone(), 0).error_code, NONE);
    assert_eq!(h.coord.leave_group(v0, 0).error_code, UNKNOWN_MEMBER_ID);
    assert_eq!(h.coord.group_state("g"), Some(GroupState::Empty));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_member_rejoining_fences_its_old_id() -> TestResult {
    let h = harness(0)?;
    let req = join_req("g", "", 10_000, 2_000, RANGE).with_group_instance_id(Some(s("inst-1")));
    // static members get their id at once, also on v5
    let first = h.coord.join_group(req.clone(), 5, &client("c")).await;
    assert_eq!(first.error_code, NONE);
    let old = first.member_id.to_string();
    assert!(old.starts_with("inst-1-"), "{old}");
    h.coord.sync_group(sync_req("g", &old, 1, &[]), 5).await;
    // the same instance restarts (no member id): a new id, the old one is fenced
    let second = h.coord.join_group(req, 5, &client("c")).await;
    assert_eq!(second.error_code, NONE);
    let new = second.member_id.to_string();
    assert_ne!(new, old);
    assert_eq!(member_ids(&second), vec![new.clone()]);
    let hb = |member: &str, generation| {
        h.coord
            .heartbeat(
                kafka_protocol::messages::HeartbeatRequest::default()
                    .with_group_id(gid("g"))
                    .with_member_id(s(member))
                    .with_group_instance_id(Some(s("inst-1")))
                    .with_generation_id(generation),
                4,
            )
            .error_code
    };
    assert_eq!(hb(&old, second.generation_id), FENCED_INSTANCE_ID);
    h.coord
        .sync_group(sync_req("g", &new, second.generation_id, &[]), 5)
        .await;
    assert_eq!(hb(&new, second.generation_id), NONE);
    // leaving by instance id (member id unknown to the caller)
    let r = h
        .coord
        .leave_group(leave_v3("g", &[("", Some("inst-1"))]), 4);
    assert_eq!(r.members[0].error_code, NONE);
    assert_eq!(h.coord.group_state("g"), Some(GroupState::Empty));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_rebalance_delay_gathers_members_into_one_generation() -> TestResult {
    let h = harness(300)?;
    let started = Instant::now();
    let a = join_new(&h.coord, "g", "a", 10_000, 5_000, RANGE).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let b = join_new(&h.coord, "g", "b", 10_000, 5_000, RANGE).await?;
    let (a, b) = (a.await?, b.await?);
    let waited = started.elapsed();
    // one delay after b's join, not one per member and not none
    assert!(waited >= Duration::from_millis(380), "{waited:?}");
    assert!(waited < Duration::from_millis(2_000), "{waited:?}");
    assert_eq!((a.generation_id, b.generation_id), (1, 1));
    let leader = if a.leader == a.member_id { &a } else { &b };
    assert_eq!(leader.members.len(), 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_releases_waiting_joins() -> TestResult {
    let h = harness(60_000)?;
    let a = join_new(&h.coord, "g", "a", 10_000, 60_000, RANGE).await?;
    assert!(still_waiting(&a, 100).await);
    let started = Instant::now();
    h.coord.shutdown();
    let a = a.await?;
    assert_eq!(a.error_code, COORDINATOR_NOT_AVAILABLE);
    assert!(started.elapsed() < Duration::from_secs(1));
    let again = h
        .coord
        .join_group(join_req("g", "", 10_000, 1000, RANGE), 5, &client("a"))
        .await;
    assert_eq!(again.error_code, COORDINATOR_NOT_AVAILABLE);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_whose_join_was_abandoned_is_evicted() -> TestResult {
    // The client of a waiting JoinGroup goes away (its connection task is dropped): it no
    // longer counts as joined, and its session (not the 10 s rebalance timeout) ends it.
    let h = harness(500)?;
    let started = Instant::now();
    let a = join_new(&h.coord, "g", "a", 200, 10_000, RANGE).await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    a.abort();
    let b = join_new(&h.coord, "g", "b", 10_000, 10_000, RANGE)
        .await?
        .await?;
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    assert_eq!(b.generation_id, 1);
    assert_eq!(member_ids(&b), vec![b.member_id.to_string()]);
    Ok(())
}
