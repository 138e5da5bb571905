//! ListGroups / DescribeGroups / DeleteGroups, and every group response encodable at every
//! version the coordinator answers.

mod group_support;

use bytes::BytesMut;
use group_support::*;
use kafka_protocol::messages::{
    DeleteGroupsRequest, DescribeGroupsRequest, HeartbeatRequest, LeaveGroupRequest,
    ListGroupsRequest, OffsetDeleteRequest, OffsetFetchRequest,
};
use kafka_protocol::protocol::Encodable;

const RANGE: &[(&str, &[&str])] = &[("range", &["t"])];

/// (member id, client id, client host, metadata, assignment)
type MemberRow = (String, String, String, Vec<u8>, Vec<u8>);

fn listed(r: &kafka_protocol::messages::ListGroupsResponse) -> Vec<(String, String, String)> {
    r.groups
        .iter()
        .map(|g| {
            (
                g.group_id.to_string(),
                g.protocol_type.to_string(),
                g.group_state.to_string(),
            )
        })
        .collect()
}

fn list(states: &[&str]) -> ListGroupsRequest {
    ListGroupsRequest::default().with_states_filter(states.iter().map(|x| s(x)).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_describe_and_delete_groups() -> TestResult {
    let h = harness(0)?;
    h.topic("t", 2)?;
    let (a_id, b_id) = stable_pair(&h.coord, "live", 10_000, 5_000, RANGE).await?;
    h.coord
        .offset_commit(
            kafka_protocol::messages::OffsetCommitRequest::default()
                .with_group_id(gid("parked"))
                .with_topics(vec![
                    kafka_protocol::messages::offset_commit_request::OffsetCommitRequestTopic::default()
                        .with_name(kafka_protocol::messages::TopicName(s("t")))
                        .with_partitions(vec![
                            kafka_protocol::messages::offset_commit_request::OffsetCommitRequestPartition::default()
                                .with_committed_offset(3),
                        ]),
                ]),
            8,
        )
        .await;
    let all = listed(&h.coord.list_groups(list(&[]), 4));
    assert_eq!(
        all,
        vec![
            ("live".into(), "consumer".into(), "Stable".into()),
            ("parked".into(), "".into(), "Empty".into()),
        ]
    );
    // states filter (v4+, case-insensitive); ignored before v4
    let empty = listed(&h.coord.list_groups(list(&["empty"]), 4));
    assert_eq!(empty, vec![("parked".into(), "".into(), "Empty".into())]);
    assert_eq!(listed(&h.coord.list_groups(list(&["empty"]), 3)).len(), 2);
    // v5 types filter: everything here is "classic"
    let consumer_only = ListGroupsRequest::default().with_types_filter(vec![s("consumer")]);
    assert!(h.coord.list_groups(consumer_only, 5).groups.is_empty());
    assert_eq!(
        h.coord.list_groups(list(&[]), 5).groups[0]
            .group_type
            .as_str(),
        "classic"
    );

    let d = h.coord.describe_groups(
        DescribeGroupsRequest::default()
            .with_groups(vec![gid("live"), gid("parked"), gid("ghost")])
            .with_include_authorized_operations(true),
        5,
    );
    let live = &d.groups[0];
    assert_eq!(
        (
            live.error_code,
            live.group_state.as_str(),
            live.protocol_type.as_str(),
            live.protocol_data.as_str()
        ),
        (NONE, "Stable", "consumer", "range")
    );
    let mut members: Vec<MemberRow> = live
        .members
        .iter()
        .map(|m| {
            (
                m.member_id.to_string(),
                m.client_id.to_string(),
                m.client_host.to_string(),
                m.member_metadata.to_vec(),
                m.member_assignment.to_vec(),
            )
        })
        .collect();
    members.sort();
    let sub = subscription(&["t"]).to_vec();
    assert_eq!(
        members,
        vec![
            (
                a_id.clone(),
                a_id.clone(),
                "/127.0.0.1".into(),
                sub.clone(),
                b"A".to_vec()
            ),
            (
                b_id.clone(),
                "b".into(),
                "/127.0.0.1".into(),
                sub.clone(),
                b"B".to_vec()
            ),
        ]
    );
    assert!(live.authorized_operations > 0);
    assert_eq!(d.groups[1].group_state.as_str(), "Empty");
    assert!(d.groups[1].members.is_empty());
    // an unknown group before v6: Dead without an error; v6: GROUP_ID_NOT_FOUND
    assert_eq!(
        (d.groups[2].error_code, d.groups[2].group_state.as_str()),
        (NONE, "Dead")
    );
    let d6 = h.coord.describe_groups(
        DescribeGroupsRequest::default().with_groups(vec![gid("ghost")]),
        6,
    );
    assert_eq!(d6.groups[0].error_code, GROUP_ID_NOT_FOUND);

    let del = |names: &[&str]| {
        DeleteGroupsRequest::default().with_groups_names(names.iter().map(|n| gid(n)).collect())
    };
    let r = h
        .coord
        .delete_groups(del(&["live", "parked", "ghost"]), 2)
        .await;
    let got: Vec<(String, i16)> = r
        .results
        .iter()
        .map(|x| (x.group_id.to_string(), x.error_code))
        .collect();
    assert_eq!(
        got,
        vec![
            ("live".into(), NON_EMPTY_GROUP),
            ("parked".into(), NONE),
            ("ghost".into(), GROUP_ID_NOT_FOUND)
        ]
    );
    assert_eq!(h.log.groups().committed("parked", "t", 0), None);
    // a member's commit: the group keeps its protocol type once empty
    let commit = h
        .coord
        .offset_commit(
            kafka_protocol::messages::OffsetCommitRequest::default()
                .with_group_id(gid("live"))
                .with_member_id(s(&a_id))
                .with_generation_id_or_member_epoch(2)
                .with_topics(vec![
                    kafka_protocol::messages::offset_commit_request::OffsetCommitRequestTopic::default()
                        .with_name(kafka_protocol::messages::TopicName(s("t")))
                        .with_partitions(vec![
                            kafka_protocol::messages::offset_commit_request::OffsetCommitRequestPartition::default()
                                .with_committed_offset(1),
                        ]),
                ]),
            8,
        )
        .await;
    assert_eq!(commit.topics[0].partitions[0].error_code, NONE);
    let leave = kafka_protocol::messages::LeaveGroupRequest::default().with_group_id(gid("live"));
    let _ = h
        .coord
        .leave_group(leave.clone().with_member_id(s(&a_id)), 1);
    let _ = h.coord.leave_group(leave.with_member_id(s(&b_id)), 1);
    assert_eq!(
        listed(&h.coord.list_groups(list(&[]), 4)),
        vec![("live".into(), "consumer".into(), "Empty".into())]
    );
    let r = h.coord.delete_groups(del(&["live"]), 0).await;
    assert_eq!(r.results[0].error_code, NONE);
    assert_eq!(h.log.groups().committed("live", "t", 0), None);
    assert!(h.coord.list_groups(list(&[]), 4).groups.is_empty());
    // a refused first join leaves no group behind
    let bad = join_req("refused", "", 10_000, 5_000, &[]);
    assert_eq!(
        h.coord.join_group(bad, 5, &client("c")).await.error_code,
        INCONSISTENT_GROUP_PROTOCOL
    );
    assert!(h.coord.list_groups(list(&[]), 4).groups.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_members_count_as_a_live_group() -> TestResult {
    let h = harness(0)?;
    h.topic("t", 2)?;
    let topic = h.log.get_topic("t")?;
    let c = riverbed_log::Consumer::new(
        &h.log,
        topic,
        Some("inproc"),
        riverbed_log::StartSpec::Earliest,
    )?;
    let r = h
        .coord
        .delete_groups(
            DeleteGroupsRequest::default().with_groups_names(vec![gid("inproc")]),
            2,
        )
        .await;
    assert_eq!(r.results[0].error_code, NON_EMPTY_GROUP);
    let d = h.coord.describe_groups(
        DescribeGroupsRequest::default().with_groups(vec![gid("inproc")]),
        5,
    );
    assert_eq!(d.groups[0].group_state.as_str(), "Stable");
    assert_eq!(d.groups[0].members.len(), 1);
    c.close()?;
    Ok(())
}

fn encodes<T: Encodable>(what: &str, msg: &T, version: i16) {
    let mut buf = BytesMut::new();
    if let Err(e) = msg.encode(&mut buf, version) {
        panic!("{what} v{version} does not encode: {e}");
    }
    assert!(!buf.is_empty());
}

/// Every answer the coordinator gives (successes and errors) encodes at every version it
/// serves: a field set that a version lacks would make the encoder fail at the dispatcher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_encodes_at_every_version() -> TestResult {
    let h = harness(0)?;
    h.topic("t", 2)?;
    for v in 0..=9 {
        let r = h
            .coord
            .join_group(
                join_req(&format!("g{v}"), "", 10_000, 5_000, RANGE),
                v,
                &client("c"),
            )
            .await;
        encodes("JoinGroup(new)", &r, v);
        let bad = h
            .coord
            .join_group(join_req("g", "zz", 1, 5_000, RANGE), v, &client("c"))
            .await;
        encodes("JoinGroup(error)", &bad, v);
    }
    let (a, b) = pair(&h.coord, "e", 10_000, 5_000, RANGE).await?;
    for v in 0..=9 {
        encodes("JoinGroup(leader)", &a, v);
        encodes("JoinGroup(follower)", &b, v);
    }
    let a_id = a.member_id.to_string();
    for v in 0..=5 {
        let r = h
            .coord
            .sync_group(sync_req("e", &a_id, 2, &[(&a_id, b"x")]), v)
            .await;
        encodes("SyncGroup", &r, v);
        let r = h.coord.sync_group(sync_req("e", "ghost", 2, &[]), v).await;
        encodes("SyncGroup(error)", &r, v);
    }
    for v in 0..=4 {
        let r = h.coord.heartbeat(
            HeartbeatRequest::default()
                .with_group_id(gid("e"))
                .with_member_id(s(&a_id))
                .with_generation_id(2),
            v,
        );
        encodes("Heartbeat", &r, v);
    }
    for v in 2..=9 {
        let r = h
            .coord
            .offset_commit(
                kafka_protocol::messages::OffsetCommitRequest::default()
                    .with_group_id(gid("simple"))
                    .with_topics(vec![
                        kafka_protocol::messages::offset_commit_request::OffsetCommitRequestTopic::default()
                            .with_name(kafka_protocol::messages::TopicName(s("t")))
                            .with_partitions(vec![
                                kafka_protocol::messages::offset_commit_request::OffsetCommitRequestPartition::default()
                                    .with_committed_offset(1),
                            ]),
                    ]),
                v,
            )
            .await;
        encodes("OffsetCommit", &r, v);
    }
    for v in 1..=9 {
        let req = if v >= 8 {
            OffsetFetchRequest::default().with_groups(vec![
                kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup::default()
                    .with_group_id(gid("simple")),
            ])
        } else {
            OffsetFetchRequest::default()
                .with_group_id(gid("simple"))
                .with_topics(Some(vec![
                kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic::default()
                    .with_name(kafka_protocol::messages::TopicName(s("t")))
                    .with_partition_indexes(vec![0, 1]),
            ]))
        };
        let r = h.coord.offset_fetch(req, v);
        encodes("OffsetFetch", &r, v);
    }
    let r = h
        .coord
        .offset_delete(
            OffsetDeleteRequest::default().with_group_id(gid("simple")),
            0,
        )
        .await;
    encodes("OffsetDelete", &r, 0);
    for v in 0..=5 {
        encodes(
            "ListGroups",
            &h.coord.list_groups(ListGroupsRequest::default(), v),
            v,
        );
    }
    for v in 0..=6 {
        let req = DescribeGroupsRequest::default().with_groups(vec![
            gid("e"),
            gid("simple"),
            gid("none"),
        ]);
        encodes("DescribeGroups", &h.coord.describe_groups(req, v), v);
    }
    for v in 0..=5 {
        let leave = LeaveGroupRequest::default()
            .with_group_id(gid("nobody"))
            .with_member_id(s("m"));
        let leave = if v >= 3 {
            leave_v3("nobody", &[("m", None)])
        } else {
            leave
        };
        encodes("LeaveGroup", &h.coord.leave_group(leave, v), v);
    }
    for v in 0..=2 {
        let req = DeleteGroupsRequest::default().with_groups_names(vec![gid("e"), gid("none")]);
        encodes("DeleteGroups", &h.coord.delete_groups(req, v).await, v);
    }
    Ok(())
}
