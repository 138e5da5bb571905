//! One member of a classic group: what it joined with, its assignment, its liveness, and the
//! JoinGroup / SyncGroup requests of it that wait for the rebalance to progress.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::{JoinGroupResponse, SyncGroupResponse};
use tokio::sync::oneshot;

#[derive(Debug)]
pub struct Member {
    pub id: String,
    /// `group.instance.id` of a static member.
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    /// Supported protocols in the member's order of preference, with their metadata.
    pub protocols: Vec<(String, Bytes)>,
    /// What the leader assigned it in the current generation (empty until SyncGroup).
    pub assignment: Bytes,
    /// Its JoinGroup waiting for the join phase to complete, and that request's version.
    pub join_waiter: Option<(oneshot::Sender<JoinGroupResponse>, i16)>,
    /// Its SyncGroup waiting for the leader's assignment, and that request's version.
    pub sync_waiter: Option<(oneshot::Sender<SyncGroupResponse>, i16)>,
    pub last_heartbeat: Instant,
}

impl Member {
    /// A JoinGroup of it is waiting and its client is still there to read the answer.
    pub fn awaiting_join(&self) -> bool {
        self.join_waiter
            .as_ref()
            .is_some_and(|(w, _)| !w.is_closed())
    }

    pub fn awaiting_sync(&self) -> bool {
        self.sync_waiter
            .as_ref()
            .is_some_and(|(w, _)| !w.is_closed())
    }

    /// When its session ends without a heartbeat. A member whose JoinGroup or SyncGroup is
    /// waiting on the coordinator is alive (Kafka does not expire those either); once the
    /// waiting request's client went away, the session clock counts again.
    pub fn session_deadline(&self) -> Option<Instant> {
        if self.awaiting_join() || self.awaiting_sync() {
            None
        } else {
            Some(self.last_heartbeat + self.session_timeout)
        }
    }

    pub fn metadata_for(&self, protocol: &str) -> Option<&Bytes> {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, m)| m)
    }

    pub fn supports(&self, protocol: &str) -> bool {
        self.metadata_for(protocol).is_some()
    }
}
