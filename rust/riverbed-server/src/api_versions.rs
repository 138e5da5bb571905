//! The API keys and version ranges this broker serves: exactly what is implemented (SASL is
//! added by the security layer when it is configured).

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};

/// (API, lowest version, highest version) served.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 12), // v13 names topics by id
    (ApiKey::Fetch, 4, 12),   // v13 names topics by id
    (ApiKey::ListOffsets, 1, 6),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 8),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 5), // v6 may name topics by id
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::DescribeCluster, 0, 1),
];

/// Served in addition when SASL is configured (SaslHandshake v0's raw tokens are not).
pub const SASL: &[(ApiKey, i16, i16)] = &[
    (ApiKey::SaslHandshake, 1, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
];

pub fn is_supported_with_sasl(key: ApiKey, version: i16) -> bool {
    SASL.iter()
        .any(|&(k, lo, hi)| k == key && (lo..=hi).contains(&version))
}

/// The ApiVersions answer of this broker: with the SASL APIs when it authenticates clients.
pub fn response_for(broker: &crate::broker::Broker, error_code: i16) -> ApiVersionsResponse {
    let mut r = response(error_code);
    if broker.users.is_some() {
        for &(k, lo, hi) in SASL {
            let mut v = ApiVersion::default();
            v.api_key = k as i16;
            v.min_version = lo;
            v.max_version = hi;
            r.api_keys.push(v);
        }
    }
    r
}

/// The range served for `key`, if any.
pub fn range(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|&(_, lo, hi)| (lo, hi))
}

pub fn is_supported(key: ApiKey, version: i16) -> bool {
    range(key).is_some_and(|(lo, hi)| (lo..=hi).contains(&version))
}

/// The ApiVersions answer (`error_code` is UNSUPPORTED_VERSION when the client asked with a
/// version we don't serve; it then retries with one from this list).
pub fn response(error_code: i16) -> ApiVersionsResponse {
    let mut r = ApiVersionsResponse::default();
    r.error_code = error_code;
    r.api_keys = SUPPORTED
        .iter()
        .map(|&(k, lo, hi)| {
            let mut v = ApiVersion::default();
            v.api_key = k as i16;
            v.min_version = lo;
            v.max_version = hi;
            v
        })
        .collect();
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_range_is_one_the_protocol_crate_can_encode() {
        for &(k, lo, hi) in SUPPORTED {
            let crate_range = k.valid_versions();
            assert!(
                crate_range.min <= lo && hi <= crate_range.max && lo <= hi,
                "{k:?} {lo}..={hi} outside {crate_range:?}"
            );
        }
    }
}
