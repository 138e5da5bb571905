//! SyncGroup: the leader's assignment handed to every member; followers wait for it.

use std::collections::HashMap;
use std::time::Instant;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::SyncGroupResponse;
use tokio::sync::oneshot;

use super::{code, Group, NONE};
use crate::groups::replies::{sync_error, sync_reply};
use crate::groups::state::GroupState;

/// A SyncGroup as the state machine needs it.
#[derive(Debug, Clone)]
pub struct SyncParams {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignments: Vec<(String, Bytes)>,
    pub version: i16,
}

pub enum SyncOutcome {
    Reply(SyncGroupResponse),
    Wait(oneshot::Receiver<SyncGroupResponse>),
}

impl Group {
    pub fn sync(&mut self, p: SyncParams, now: Instant) -> SyncOutcome {
        let reply = |c: ResponseError| SyncOutcome::Reply(sync_error(code(c)));
        if self.state == GroupState::Dead {
            return reply(ResponseError::CoordinatorNotAvailable);
        }
        if self.fenced(p.instance_id.as_deref(), &p.member_id) {
            return reply(ResponseError::FencedInstanceId);
        }
        if !self.members.contains_key(&p.member_id) {
            return reply(ResponseError::UnknownMemberId);
        }
        if p.generation != self.generation {
            return reply(ResponseError::IllegalGeneration);
        }
        let mismatch = |given: &Option<String>, ours: &Option<String>| {
            given.is_some() && given.as_deref() != ours.as_deref()
        };
        if mismatch(&p.protocol_type, &self.protocol_type)
            || mismatch(&p.protocol_name, &self.protocol_name)
        {
            return reply(ResponseError::InconsistentGroupProtocol);
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => reply(ResponseError::UnknownMemberId),
            GroupState::PreparingRebalance => reply(ResponseError::RebalanceInProgress),
            GroupState::Stable => {
                let assignment = self
                    .members
                    .get(&p.member_id)
                    .map(|m| m.assignment.clone())
                    .unwrap_or_default();
                SyncOutcome::Reply(self.sync_ok(assignment))
            }
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                if let Some(m) = self.members.get_mut(&p.member_id) {
                    m.sync_waiter = Some((tx, p.version));
                    m.last_heartbeat = now;
                }
                if self.leader.as_deref() == Some(p.member_id.as_str()) {
                    let mut given: HashMap<String, Bytes> = p.assignments.into_iter().collect();
                    for m in self.members.values_mut() {
                        m.assignment = given.remove(&m.id).unwrap_or_default();
                    }
                    self.state = GroupState::Stable;
                    self.sync_deadline = None;
                    let ok: Vec<(String, SyncGroupResponse)> = self
                        .members
                        .values()
                        .map(|m| (m.id.clone(), self.sync_ok(m.assignment.clone())))
                        .collect();
                    for (id, reply) in ok {
                        if let Some(m) = self.members.get_mut(&id) {
                            if let Some((tx, _)) = m.sync_waiter.take() {
                                let _ = tx.send(reply);
                            }
                        }
                    }
                }
                SyncOutcome::Wait(rx)
            }
        }
    }

    fn sync_ok(&self, assignment: Bytes) -> SyncGroupResponse {
        sync_reply(
            NONE,
            self.protocol_type.as_deref(),
            self.protocol_name.as_deref(),
            assignment,
        )
    }
}
