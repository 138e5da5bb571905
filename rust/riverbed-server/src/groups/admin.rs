//! ListGroups / DescribeGroups / DeleteGroups. A group is known to the broker if Kafka clients
//! are members, if it has committed offsets (state Empty, as Kafka reports an offsets-only
//! group), or if the process serving the log consumes with it in-process (state Stable).

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    GroupId, ListGroupsRequest, ListGroupsResponse,
};

use super::replies::str_bytes;
use super::{Coordinator, GroupState};

/// Kafka's ACL operation bits a group has: READ (3), DELETE (6), DESCRIBE (8).
const GROUP_OPERATIONS: i32 = (1 << 3) | (1 << 6) | (1 << 8);

/// What ListGroups says of one group: (protocol type, state).
type Listed = (String, &'static str);

impl Coordinator {
    /// Every group the broker knows, by name.
    fn known_groups(&self) -> BTreeMap<String, Listed> {
        let store = self.log.groups();
        let mut out: BTreeMap<String, Listed> = store
            .groups_with_offsets()
            .into_iter()
            .map(|g| (g, (String::new(), GroupState::Empty.name())))
            .collect();
        for (name, g) in self.groups.lock().iter() {
            if g.state != GroupState::Dead {
                let protocol_type = g.protocol_type.clone().unwrap_or_default();
                out.insert(name.clone(), (protocol_type, g.state.name()));
            }
        }
        // In-process members make a group live unless Kafka clients are members of it too.
        for g in store.live_groups() {
            let kafka_members = out
                .get(&g)
                .is_some_and(|(_, state)| *state != GroupState::Empty.name());
            if !kafka_members {
                out.insert(g, ("consumer".into(), GroupState::Stable.name()));
            }
        }
        out
    }

    pub(super) fn list(&self, req: ListGroupsRequest, version: i16) -> ListGroupsResponse {
        if self.is_closed() {
            return ListGroupsResponse::default()
                .with_error_code(ResponseError::CoordinatorNotAvailable.code());
        }
        let states: Vec<String> = if version >= 4 {
            req.states_filter.iter().map(|s| s.to_lowercase()).collect()
        } else {
            Vec::new()
        };
        // Every group here is a classic group.
        let classic_wanted = version < 5
            || req.types_filter.is_empty()
            || req
                .types_filter
                .iter()
                .any(|t| t.eq_ignore_ascii_case("classic"));
        let groups = if classic_wanted {
            self.known_groups()
                .into_iter()
                .filter(|(_, (_, state))| {
                    states.is_empty() || states.contains(&state.to_lowercase())
                })
                .map(|(name, (protocol_type, state))| {
                    ListedGroup::default()
                        .with_group_id(GroupId(str_bytes(&name)))
                        .with_protocol_type(str_bytes(&protocol_type))
                        .with_group_state(str_bytes(state))
                        .with_group_type(str_bytes("classic"))
                })
                .collect()
        } else {
            Vec::new()
        };
        ListGroupsResponse::default().with_groups(groups)
    }

    pub(super) fn describe(
        &self,
        req: DescribeGroupsRequest,
        version: i16,
    ) -> DescribeGroupsResponse {
        let operations = if version >= 3 && req.include_authorized_operations {
            GROUP_OPERATIONS
        } else {
            i32::MIN
        };
        let groups = req
            .groups
            .iter()
            .map(|name| {
                self.describe_one(name, version)
                    .with_group_id(name.clone())
                    .with_authorized_operations(operations)
            })
            .collect();
        DescribeGroupsResponse::default().with_groups(groups)
    }

    fn describe_one(&self, name: &str, version: i16) -> DescribedGroup {
        if self.is_closed() {
            return DescribedGroup::default()
                .with_error_code(ResponseError::CoordinatorNotAvailable.code());
        }
        let store = self.log.groups();
        if let Some(g) = self.groups.lock().get(name) {
            if g.state != GroupState::Dead
                && (g.state != GroupState::Empty || !store.live_groups().contains(name))
            {
                // As Kafka: metadata, assignments and the protocol only once Stable.
                let stable = g.state == GroupState::Stable;
                let protocol = if stable {
                    g.protocol_name.clone().unwrap_or_default()
                } else {
                    String::new()
                };
                let members = g
                    .members
                    .values()
                    .map(|m| {
                        let member = DescribedGroupMember::default()
                            .with_member_id(str_bytes(&m.id))
                            .with_group_instance_id(m.instance_id.as_deref().map(str_bytes))
                            .with_client_id(str_bytes(&m.client_id))
                            .with_client_host(str_bytes(&m.client_host));
                        if stable {
                            member
                                .with_member_metadata(
                                    m.metadata_for(&protocol).cloned().unwrap_or_default(),
                                )
                                .with_member_assignment(m.assignment.clone())
                        } else {
                            member
                        }
                    })
                    .collect();
                return DescribedGroup::default()
                    .with_group_state(str_bytes(g.state.name()))
                    .with_protocol_type(str_bytes(g.protocol_type.as_deref().unwrap_or_default()))
                    .with_protocol_data(str_bytes(&protocol))
                    .with_members(members);
            }
        }
        let embedded = store.members(name);
        if !embedded.is_empty() {
            let members = embedded
                .into_iter()
                .map(|(id, _)| {
                    DescribedGroupMember::default()
                        .with_member_id(str_bytes(&format!("riverbed-in-process-{id}")))
                        .with_client_id(str_bytes("riverbed (in-process)"))
                })
                .collect();
            return DescribedGroup::default()
                .with_group_state(str_bytes(GroupState::Stable.name()))
                .with_protocol_type(str_bytes("consumer"))
                .with_protocol_data(str_bytes("range"))
                .with_members(members);
        }
        if store.groups_with_offsets().contains(name) || self.groups.lock().contains_key(name) {
            let protocol_type = self
                .groups
                .lock()
                .get(name)
                .and_then(|g| g.protocol_type.clone())
                .unwrap_or_default();
            return DescribedGroup::default()
                .with_group_state(str_bytes(GroupState::Empty.name()))
                .with_protocol_type(str_bytes(&protocol_type));
        }
        if version >= 6 {
            DescribedGroup::default()
                .with_error_code(ResponseError::GroupIdNotFound.code())
                .with_error_message(Some(str_bytes(&format!("Group {name} not found."))))
                .with_group_state(str_bytes(GroupState::Dead.name()))
        } else {
            // Before v6 Kafka describes an unknown group as Dead, without an error.
            DescribedGroup::default().with_group_state(str_bytes(GroupState::Dead.name()))
        }
    }

    pub(super) async fn delete(
        &self,
        req: DeleteGroupsRequest,
        _version: i16,
    ) -> DeleteGroupsResponse {
        let mut results = Vec::with_capacity(req.groups_names.len());
        for name in &req.groups_names {
            let code = self.delete_one(name).await;
            results.push(
                DeletableGroupResult::default()
                    .with_group_id(name.clone())
                    .with_error_code(code),
            );
        }
        DeleteGroupsResponse::default().with_results(results)
    }

    async fn delete_one(&self, name: &str) -> i16 {
        if self.is_closed() {
            return ResponseError::CoordinatorNotAvailable.code();
        }
        let store = self.log.groups();
        if !store.members(name).is_empty() {
            return ResponseError::NonEmptyGroup.code();
        }
        {
            let mut groups = self.groups.lock();
            match groups.get_mut(name) {
                Some(g) if g.state == GroupState::Dead => {
                    return ResponseError::GroupIdNotFound.code()
                }
                Some(g) if !g.members.is_empty() => return ResponseError::NonEmptyGroup.code(),
                // Dead while its offsets go: joins meanwhile get COORDINATOR_NOT_AVAILABLE.
                Some(g) => g.state = GroupState::Dead,
                None if !store.groups_with_offsets().contains(name) => {
                    return ResponseError::GroupIdNotFound.code()
                }
                None => {}
            }
        }
        let log = self.log.clone();
        let group = name.to_string();
        let done = tokio::task::spawn_blocking(move || {
            log.groups()
                .delete_group_offsets(&log, &group)
                .map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(format!("delete task failed: {e}")));
        let mut groups = self.groups.lock();
        match done {
            Ok(_) => {
                groups.remove(name);
                0
            }
            Err(why) => {
                eprintln!("riverbed serve: DeleteGroups '{name}' failed: {why}");
                if let Some(g) = groups.get_mut(name) {
                    g.state = GroupState::Empty;
                }
                ResponseError::UnknownServerError.code()
            }
        }
    }
}
