//! Liveness: heartbeats, commits as signs of life, members leaving, and the deadlines
//! (session, rebalance, sync) that remove members which went quiet.

use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;

use super::{answer_waiters, code, Group, NONE};
use crate::groups::member::Member;
use crate::groups::state::GroupState;

impl Group {
    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> i16 {
        if self.state == GroupState::Dead {
            return code(ResponseError::CoordinatorNotAvailable);
        }
        if self.fenced(instance_id, member_id) {
            return code(ResponseError::FencedInstanceId);
        }
        let Some(m) = self.members.get_mut(member_id) else {
            return code(ResponseError::UnknownMemberId);
        };
        if generation != self.generation {
            return code(ResponseError::IllegalGeneration);
        }
        m.last_heartbeat = now;
        match self.state {
            GroupState::PreparingRebalance => code(ResponseError::RebalanceInProgress),
            GroupState::Empty | GroupState::Dead => code(ResponseError::UnknownMemberId),
            GroupState::CompletingRebalance | GroupState::Stable => NONE,
        }
    }

    /// A member committed offsets: that counts as a sign of life.
    pub fn touch(&mut self, member_id: &str, now: Instant) {
        if let Some(m) = self.members.get_mut(member_id) {
            m.last_heartbeat = now;
        }
    }

    /// Check a generation-based OffsetCommit (Kafka's rules); `Ok(true)` when it may commit
    /// as a member, `Ok(false)` for a simple (non-member) commit.
    pub fn check_commit(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<bool, ResponseError> {
        if self.state == GroupState::Dead {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        if self.fenced(instance_id, member_id) {
            return Err(ResponseError::FencedInstanceId);
        }
        if generation < 0 && self.state == GroupState::Empty {
            return Ok(false);
        }
        if self.state == GroupState::CompletingRebalance {
            return Err(ResponseError::RebalanceInProgress);
        }
        if !self.members.contains_key(member_id) {
            return Err(ResponseError::UnknownMemberId);
        }
        if generation != self.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        Ok(true)
    }

    /// One member of a LeaveGroup: by member id, or by instance id for a static member.
    pub fn leave(&mut self, member_id: &str, instance_id: Option<&str>, now: Instant) -> i16 {
        if self.state == GroupState::Dead {
            return code(ResponseError::CoordinatorNotAvailable);
        }
        let id = match instance_id {
            Some(instance) => match self.static_members.get(instance) {
                None => return code(ResponseError::UnknownMemberId),
                Some(cur) if !member_id.is_empty() && cur != member_id => {
                    return code(ResponseError::FencedInstanceId)
                }
                Some(cur) => cur.clone(),
            },
            None => member_id.to_string(),
        };
        if self.pending.remove(&id).is_some() {
            self.try_complete_join(now);
            return NONE;
        }
        if !self.remove_member(&id, now, code(ResponseError::UnknownMemberId)) {
            return code(ResponseError::UnknownMemberId);
        }
        NONE
    }

    /// Take a member out (answering its waiting requests with `error`) and rebalance the rest.
    pub fn remove_member(&mut self, id: &str, now: Instant, error: i16) -> bool {
        if !self.drop_member(id, error) {
            return false;
        }
        if matches!(
            self.state,
            GroupState::Stable | GroupState::CompletingRebalance
        ) {
            self.prepare_rebalance(now, Duration::ZERO);
        }
        self.try_complete_join(now);
        true
    }

    /// Take a member out without a state transition.
    pub(super) fn drop_member(&mut self, id: &str, error: i16) -> bool {
        let Some(mut m) = self.members.remove(id) else {
            return false;
        };
        answer_waiters(&mut m, error);
        if let Some(instance) = &m.instance_id {
            if self.static_members.get(instance).map(String::as_str) == Some(id) {
                self.static_members.remove(instance);
            }
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
        true
    }

    /// Apply every deadline that passed by `now`: expired sessions and handed-out ids, the end
    /// of the initial delay, the rebalance timeout (join phase) and the sync timeout.
    pub fn on_timer(&mut self, now: Instant) {
        self.pending.retain(|_, deadline| *deadline > now);
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.session_deadline().is_some_and(|d| d <= now))
            .map(|m| m.id.clone())
            .collect();
        for id in expired {
            eprintln!(
                "riverbed serve: group '{}': member '{id}' sent no heartbeat within its session \
                 timeout; removed",
                self.id
            );
            self.remove_member(&id, now, code(ResponseError::UnknownMemberId));
        }
        match self.state {
            GroupState::PreparingRebalance => {
                if self.rebalance_deadline.is_some_and(|d| d <= now) {
                    self.complete_join(now);
                } else {
                    self.try_complete_join(now);
                }
            }
            GroupState::CompletingRebalance if self.sync_deadline.is_some_and(|d| d <= now) => {
                let unsynced: Vec<String> = self
                    .members
                    .values()
                    .filter(|m| !m.awaiting_sync())
                    .map(|m| m.id.clone())
                    .collect();
                for id in unsynced {
                    eprintln!(
                        "riverbed serve: group '{}': member '{id}' sent no SyncGroup within the \
                         rebalance timeout; removed",
                        self.id
                    );
                    self.remove_member(&id, now, code(ResponseError::UnknownMemberId));
                }
            }
            _ => {}
        }
    }

    /// The earliest deadline `on_timer` must see.
    pub fn next_deadline(&self) -> Option<Instant> {
        let sessions = self.members.values().filter_map(Member::session_deadline);
        let pending = self.pending.values().copied();
        let phase = match self.state {
            GroupState::PreparingRebalance => {
                [self.rebalance_deadline, self.initial_delay.map(|d| d.until)]
            }
            GroupState::CompletingRebalance => [self.sync_deadline, None],
            _ => [None, None],
        };
        sessions
            .chain(pending)
            .chain(phase.into_iter().flatten())
            .min()
    }

    /// Answer every waiting request with `error` (shutdown, deletion).
    pub fn release_waiters(&mut self, error: i16) {
        for m in self.members.values_mut() {
            answer_waiters(m, error);
        }
    }
}
