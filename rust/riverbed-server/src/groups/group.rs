//! One classic group's state machine, as Kafka's group coordinator runs it: members join
//! (PreparingRebalance) until every known member has rejoined or the rebalance timeout removes
//! the rest, the coordinator picks a protocol and a leader and answers every JoinGroup
//! (CompletingRebalance), the leader's SyncGroup hands each member its assignment (Stable).
//! A member that leaves, stops heartbeating within its session timeout, or joins with new
//! metadata starts the next rebalance.
//!
//! Nothing here blocks or does I/O; waiting requests hold a oneshot receiver that the state
//! machine answers.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::JoinGroupResponse;
use tokio::sync::oneshot;

mod liveness;
mod sync;

pub use sync::{SyncOutcome, SyncParams};

use super::member::Member;
use super::replies::{join_error, str_bytes, sync_error};
use super::state::GroupState;

const NONE: i16 = 0;

fn code(e: ResponseError) -> i16 {
    e.code()
}

/// `group.initial.rebalance.delay.ms` in effect: a new group waits for more members before its
/// first generation, one delay after each join, never past the rebalance timeout.
#[derive(Debug, Clone, Copy)]
struct InitialDelay {
    until: Instant,
    step: Duration,
    cap: Instant,
}

/// A JoinGroup as the state machine needs it.
#[derive(Debug, Clone)]
pub struct JoinParams {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub version: i16,
}

pub enum JoinOutcome {
    Reply(JoinGroupResponse),
    Wait(oneshot::Receiver<JoinGroupResponse>),
}

#[derive(Debug)]
pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, until the member joins with it (or its
    /// session timeout passes).
    pub pending: HashMap<String, Instant>,
    /// `group.instance.id` -> member id of static members.
    pub static_members: HashMap<String, String>,
    rebalance_deadline: Option<Instant>,
    initial_delay: Option<InitialDelay>,
    sync_deadline: Option<Instant>,
}

impl Group {
    pub fn new(id: &str) -> Group {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: BTreeMap::new(),
            pending: HashMap::new(),
            static_members: HashMap::new(),
            rebalance_deadline: None,
            initial_delay: None,
            sync_deadline: None,
        }
    }

    /// A static member's instance id is held by another member id: the caller is a zombie.
    fn fenced(&self, instance_id: Option<&str>, member_id: &str) -> bool {
        instance_id
            .and_then(|i| self.static_members.get(i))
            .is_some_and(|current| current != member_id)
    }

    /// Protocols every current member supports.
    fn common_protocols(&self) -> Vec<String> {
        let Some(first) = self.members.values().next() else {
            return Vec::new();
        };
        first
            .protocols
            .iter()
            .map(|(name, _)| name.clone())
            .filter(|name| self.members.values().all(|m| m.supports(name)))
            .collect()
    }

    /// Whether a member with these protocols may join: the group's protocol type, and at
    /// least one protocol every member supports.
    fn accepts(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if protocol_type.is_empty() || protocols.is_empty() {
            return false;
        }
        if self.members.is_empty() {
            return true;
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && self
                .common_protocols()
                .iter()
                .any(|c| protocols.iter().any(|(name, _)| name == c))
    }

    pub fn join(
        &mut self,
        p: JoinParams,
        new_member_id: String,
        now: Instant,
        initial_delay: Duration,
    ) -> JoinOutcome {
        let version = p.version;
        let reply =
            |c: ResponseError, id: &str| JoinOutcome::Reply(join_error(version, code(c), id));
        if self.state == GroupState::Dead {
            return reply(ResponseError::CoordinatorNotAvailable, &p.member_id);
        }
        if !self.accepts(&p.protocol_type, &p.protocols) {
            return reply(ResponseError::InconsistentGroupProtocol, &p.member_id);
        }
        if p.member_id.is_empty() {
            if let Some(instance) = p.instance_id.clone() {
                // A static member (re)joins: it takes over the instance id; an older member id
                // holding it is fenced.
                if let Some(old) = self.static_members.get(&instance).cloned() {
                    if let Some(mut m) = self.members.remove(&old) {
                        answer_waiters(&mut m, code(ResponseError::FencedInstanceId));
                    }
                    if self.leader.as_deref() == Some(old.as_str()) {
                        self.leader = None;
                    }
                }
                self.static_members.insert(instance, new_member_id.clone());
                return self.add_member(new_member_id, p, now, initial_delay);
            }
            if version >= 4 {
                // KIP-394: hand out the id first, so a member that times out before its join
                // completes can rejoin under the same id instead of piling up.
                let deadline = now + p.session_timeout;
                self.pending.insert(new_member_id.clone(), deadline);
                return reply(ResponseError::MemberIdRequired, &new_member_id);
            }
            return self.add_member(new_member_id, p, now, initial_delay);
        }
        if self.pending.remove(&p.member_id).is_some() {
            let id = p.member_id.clone();
            return self.add_member(id, p, now, initial_delay);
        }
        if self.fenced(p.instance_id.as_deref(), &p.member_id) {
            return reply(ResponseError::FencedInstanceId, &p.member_id);
        }
        let Some(member) = self.members.get(&p.member_id) else {
            return reply(ResponseError::UnknownMemberId, &p.member_id);
        };
        let same_protocols = member.protocols == p.protocols;
        let is_leader = self.leader.as_deref() == Some(p.member_id.as_str());
        match self.state {
            GroupState::PreparingRebalance => {
                let rx = self.update_member(p, now);
                self.try_complete_join(now);
                JoinOutcome::Wait(rx)
            }
            GroupState::CompletingRebalance | GroupState::Stable
                if same_protocols && !(self.state == GroupState::Stable && is_leader) =>
            {
                // Nothing changed: the member missed our answer; give it the current one.
                JoinOutcome::Reply(self.join_response(&p.member_id, version))
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                let rx = self.update_member(p, now);
                self.prepare_rebalance(now, Duration::ZERO);
                self.try_complete_join(now);
                JoinOutcome::Wait(rx)
            }
            GroupState::Empty | GroupState::Dead => {
                reply(ResponseError::UnknownMemberId, &p.member_id)
            }
        }
    }

    fn add_member(
        &mut self,
        id: String,
        p: JoinParams,
        now: Instant,
        initial_delay: Duration,
    ) -> JoinOutcome {
        let (tx, rx) = oneshot::channel();
        if self.members.is_empty() {
            self.protocol_type = Some(p.protocol_type.clone());
        }
        self.members.insert(
            id.clone(),
            Member {
                id,
                instance_id: p.instance_id,
                client_id: p.client_id,
                client_host: p.client_host,
                session_timeout: p.session_timeout,
                rebalance_timeout: p.rebalance_timeout,
                protocols: p.protocols,
                assignment: Bytes::new(),
                join_waiter: Some((tx, p.version)),
                sync_waiter: None,
                last_heartbeat: now,
            },
        );
        match self.state {
            GroupState::PreparingRebalance => {
                if let Some(d) = self.initial_delay.as_mut() {
                    d.until = (now + d.step).min(d.cap);
                }
            }
            _ => self.prepare_rebalance(now, initial_delay),
        }
        self.try_complete_join(now);
        JoinOutcome::Wait(rx)
    }

    /// A known member joins again: take its new settings and park its request.
    fn update_member(
        &mut self,
        p: JoinParams,
        now: Instant,
    ) -> oneshot::Receiver<JoinGroupResponse> {
        let (tx, rx) = oneshot::channel();
        if let Some(m) = self.members.get_mut(&p.member_id) {
            m.protocols = p.protocols;
            m.session_timeout = p.session_timeout;
            m.rebalance_timeout = p.rebalance_timeout;
            m.client_id = p.client_id;
            m.client_host = p.client_host;
            m.last_heartbeat = now;
            // A second JoinGroup replaces the first (whose receiver then reads a closed channel).
            m.join_waiter = Some((tx, p.version));
        }
        rx
    }

    fn max_rebalance_timeout(&self) -> Duration {
        self.members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default()
    }

    /// Start a rebalance: assignments are void; members waiting for one are told to rejoin.
    fn prepare_rebalance(&mut self, now: Instant, initial_delay: Duration) {
        let was_empty = self.state == GroupState::Empty;
        for m in self.members.values_mut() {
            m.assignment = Bytes::new();
            if let Some((tx, _)) = m.sync_waiter.take() {
                let _ = tx.send(sync_error(code(ResponseError::RebalanceInProgress)));
            }
        }
        let timeout = self.max_rebalance_timeout();
        self.state = GroupState::PreparingRebalance;
        self.rebalance_deadline = Some(now + timeout);
        self.sync_deadline = None;
        self.initial_delay = (was_empty && !initial_delay.is_zero()).then(|| InitialDelay {
            until: now + initial_delay.min(timeout),
            step: initial_delay,
            cap: now + timeout,
        });
    }

    /// Finish the join phase once every member has rejoined (and the initial delay is over).
    fn try_complete_join(&mut self, now: Instant) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        if let Some(d) = self.initial_delay {
            if now < d.until {
                return;
            }
            self.initial_delay = None;
        }
        if self.pending.is_empty() && self.members.values().all(Member::awaiting_join) {
            self.complete_join(now);
        }
    }

    /// The next generation: members that did not rejoin are removed, a protocol and a leader
    /// are chosen, every waiting JoinGroup is answered (the leader's with all members).
    fn complete_join(&mut self, now: Instant) {
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| !m.awaiting_join())
            .map(|m| m.id.clone())
            .collect();
        for id in gone {
            eprintln!(
                "riverbed serve: group '{}': member '{id}' did not rejoin within the rebalance \
                 timeout; removed",
                self.id
            );
            self.drop_member(&id, code(ResponseError::UnknownMemberId));
        }
        self.rebalance_deadline = None;
        self.initial_delay = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol_name = None;
            self.leader = None;
            return;
        }
        self.protocol_name = self.select_protocol();
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = GroupState::CompletingRebalance;
        self.sync_deadline = Some(now + self.max_rebalance_timeout());
        let replies: Vec<(String, JoinGroupResponse)> = self
            .members
            .values()
            .filter_map(|m| {
                let (_, version) = m.join_waiter.as_ref()?;
                Some((m.id.clone(), self.join_response(&m.id, *version)))
            })
            .collect();
        for (id, reply) in replies {
            if let Some(m) = self.members.get_mut(&id) {
                m.last_heartbeat = now;
                if let Some((tx, _)) = m.join_waiter.take() {
                    let _ = tx.send(reply);
                }
            }
        }
    }

    /// The protocol most members prefer among those all support (Kafka's vote); ties go to
    /// the first member's order of preference.
    fn select_protocol(&self) -> Option<String> {
        let candidates = self.common_protocols();
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some((name, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(n)) {
                *votes.entry(name.as_str()).or_default() += 1;
            }
        }
        let most = votes.values().copied().max()?;
        candidates
            .into_iter()
            .find(|c| votes.get(c.as_str()) == Some(&most))
    }

    /// The current generation's JoinGroup answer for `member_id`.
    fn join_response(&self, member_id: &str, _version: i16) -> JoinGroupResponse {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        let leader = self.leader.clone().unwrap_or_default();
        let members = if leader == member_id {
            self.members
                .values()
                .map(|m| {
                    JoinGroupResponseMember::default()
                        .with_member_id(str_bytes(&m.id))
                        .with_group_instance_id(m.instance_id.as_deref().map(str_bytes))
                        .with_metadata(m.metadata_for(&protocol).cloned().unwrap_or_default())
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinGroupResponse::default()
            .with_error_code(NONE)
            .with_generation_id(self.generation)
            .with_protocol_type(self.protocol_type.as_deref().map(str_bytes))
            .with_protocol_name(Some(str_bytes(&protocol)))
            .with_leader(str_bytes(&leader))
            .with_member_id(str_bytes(member_id))
            .with_members(members)
    }
}

fn answer_waiters(m: &mut Member, error: i16) {
    if let Some((tx, version)) = m.join_waiter.take() {
        let _ = tx.send(join_error(version, error, &m.id));
    }
    if let Some((tx, _)) = m.sync_waiter.take() {
        let _ = tx.send(sync_error(error));
    }
}
