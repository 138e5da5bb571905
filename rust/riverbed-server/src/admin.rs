//! Topic administration: CreateTopics, DeleteTopics, CreatePartitions, DescribeConfigs (topic
//! settings the log has, under Kafka's names, and the broker's own), AlterConfigs and
//! IncrementalAlterConfigs (those topic settings) and DescribeCluster.

use std::sync::Arc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest,
    AlterConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest,
    CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, DescribeClusterRequest,
    DescribeClusterResponse, DescribeConfigsRequest, DescribeConfigsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use riverbed_log::{Cleanup, LogError, TopicConfig, TopicOptions};

use crate::broker::Broker;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;
const TYPE_BOOLEAN: i8 = 1;
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;

/// The topic settings the log has, under Kafka's names: (name, type, value of a config).
fn topic_settings(c: &TopicConfig) -> Vec<(&'static str, i8, String)> {
    let opt = |v: Option<i64>| v.unwrap_or(-1).to_string();
    vec![
        ("retention.ms", TYPE_LONG, opt(c.retention_ms)),
        (
            "retention.bytes",
            TYPE_LONG,
            opt(c.retention_bytes.map(|b| b as i64)),
        ),
        ("segment.bytes", TYPE_INT, c.segment_bytes.to_string()),
        (
            "segment.ms",
            TYPE_LONG,
            c.segment_ms.unwrap_or(i64::MAX).to_string(),
        ),
        (
            "cleanup.policy",
            TYPE_STRING,
            match c.cleanup {
                Cleanup::Delete => "delete".into(),
                Cleanup::Compact => "compact".into(),
            },
        ),
        (
            "delete.retention.ms",
            TYPE_LONG,
            c.delete_retention_ms.to_string(),
        ),
    ]
}

/// Apply one Kafka-named topic setting to `opts`; an unknown name or bad value is an error.
fn set_option(opts: &mut TopicOptions, name: &str, value: Option<&str>) -> Result<(), String> {
    let v = value.unwrap_or("");
    let long = |v: &str| {
        v.parse::<i64>()
            .map_err(|_| format!("{name}={v:?} is not a number"))
    };
    match name {
        "retention.ms" => {
            let n = long(v)?;
            if n < -1 {
                return Err(format!("{name}={n}: use -1 (keep forever) or a time >= 0"));
            }
            opts.retention_ms = Some((n >= 0).then_some(n));
        }
        "retention.bytes" => {
            let n = long(v)?;
            if n < -1 {
                return Err(format!("{name}={n}: use -1 (no limit) or a size >= 0"));
            }
            opts.retention_bytes = Some((n >= 0).then_some(n as u64));
        }
        "segment.bytes" => {
            opts.segment_bytes =
                Some(u64::try_from(long(v)?).map_err(|_| format!("{name} must be positive"))?)
        }
        "segment.ms" => {
            let n = long(v)?;
            opts.segment_ms = Some((n != i64::MAX).then_some(n));
        }
        "cleanup.policy" => {
            opts.cleanup = Some(match v {
                "delete" => Cleanup::Delete,
                "compact" => Cleanup::Compact,
                _ => return Err(format!("cleanup.policy={v:?}: use delete or compact")),
            })
        }
        "delete.retention.ms" => {
            let n = long(v)?;
            if n < 0 {
                return Err(format!("{name}={n}: must be >= 0"));
            }
            opts.delete_retention_ms = Some(n)
        }
        _ => {
            return Err(format!(
                "topic config {name:?} is not supported (supported: retention.ms, \
                 retention.bytes, segment.bytes, segment.ms, cleanup.policy, delete.retention.ms)"
            ))
        }
    }
    Ok(())
}

/// A topic has at most this many partitions (as through the Python API and the CLI).
pub const MAX_PARTITIONS: u32 = 10_000;

/// Whether `more` partitions may be added: at most [`MAX_PARTITIONS`] per request, and every
/// partition of the log keeps one file open, so the total must stay under the process's
/// open-file limit (with room for connections) or the log could not be opened again.
fn partition_budget(broker: &Broker, more: u32) -> Result<(), String> {
    if more > MAX_PARTITIONS {
        return Err(format!(
            "{more} partitions: at most {MAX_PARTITIONS} per topic"
        ));
    }
    let Some(limit) = open_file_limit() else {
        return Ok(());
    };
    let have: u64 = broker
        .log
        .topic_names()
        .iter()
        .filter_map(|n| broker.log.get_topic(n).ok())
        .map(|t| u64::from(t.num_partitions()))
        .sum();
    let room = limit.saturating_sub(256);
    if have + u64::from(more) > room {
        return Err(format!(
            "{more} more partitions would make {} in the log, over what this process can keep \
             open ({limit} open files, 256 kept for connections); raise the limit (ulimit -n) \
             or use fewer partitions",
            have + u64::from(more)
        ));
    }
    Ok(())
}

/// The soft limit on open files of this process (Linux: `/proc/self/limits`).
fn open_file_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

pub fn create_topics(
    broker: &Arc<Broker>,
    req: CreateTopicsRequest,
    _version: i16,
) -> CreateTopicsResponse {
    let mut resp = CreateTopicsResponse::default();
    let mut any_error = false;
    for t in req.topics {
        let name = t.name.0.as_str().to_string();
        let mut r = CreatableTopicResult::default();
        r.name = t.name.clone();
        r.num_partitions = -1;
        r.replication_factor = -1;
        let partitions = if t.num_partitions == -1 {
            broker.config.num_partitions as i32
        } else {
            t.num_partitions
        };
        let outcome: Result<u32, (i16, String)> = (|| {
            riverbed_log::topic::validate_topic_name(&name)
                .map_err(|e| (ResponseError::InvalidTopicException.code(), e.to_string()))?;
            if partitions < 1 || (!t.assignments.is_empty() && t.num_partitions != -1) {
                return Err((
                    ResponseError::InvalidPartitions.code(),
                    format!("{partitions} partitions: give at least one (and no assignments)"),
                ));
            }
            partition_budget(broker, partitions as u32)
                .map_err(|e| (ResponseError::InvalidPartitions.code(), e))?;
            if !(t.replication_factor == -1 || t.replication_factor == 1) {
                return Err((
                    ResponseError::InvalidReplicationFactor.code(),
                    format!(
                        "replication factor {} on a single-node broker: use 1 (or -1)",
                        t.replication_factor
                    ),
                ));
            }
            let mut opts = TopicOptions {
                partitions: Some(partitions as u32),
                ..TopicOptions::default()
            };
            for c in &t.configs {
                set_option(
                    &mut opts,
                    c.name.as_str(),
                    c.value.as_ref().map(|v| v.as_str()),
                )
                .map_err(|e| (ResponseError::InvalidConfig.code(), e))?;
            }
            opts.to_config()
                .validate(&name)
                .map_err(|e| (ResponseError::InvalidConfig.code(), e.to_string()))?;
            if broker.log.get_topic(&name).is_ok() {
                return Err((
                    ResponseError::TopicAlreadyExists.code(),
                    format!("topic '{name}' already exists"),
                ));
            }
            if !req.validate_only {
                broker
                    .log
                    .topic(&name, &opts)
                    .map_err(|e| (crate::error::code_for(&e), e.to_string()))?;
            }
            Ok(partitions as u32)
        })();
        match outcome {
            Ok(n) => {
                r.num_partitions = n as i32;
                r.replication_factor = 1;
            }
            Err((code, msg)) => {
                any_error = true;
                r.error_code = code;
                r.error_message = Some(StrBytes::from_string(msg));
            }
        }
        resp.topics.push(r);
    }
    if any_error {
        broker.metrics.error(ApiKey::CreateTopics);
    }
    resp
}

pub fn delete_topics(
    broker: &Arc<Broker>,
    req: DeleteTopicsRequest,
    _version: i16,
) -> DeleteTopicsResponse {
    let mut resp = DeleteTopicsResponse::default();
    let names: Vec<Option<TopicName>> = if req.topics.is_empty() {
        req.topic_names.into_iter().map(Some).collect()
    } else {
        req.topics.into_iter().map(|t| t.name).collect()
    };
    let mut any_error = false;
    for name in names {
        let mut r = DeletableTopicResult::default();
        let Some(name) = name else {
            r.error_code = ResponseError::UnknownTopicId.code();
            any_error = true;
            resp.responses.push(r);
            continue;
        };
        match broker.log.delete_topic(name.0.as_str()) {
            Ok(()) => {}
            Err(e) => {
                any_error = true;
                r.error_code = match &e {
                    LogError::InternalTopic(_) => ResponseError::TopicAuthorizationFailed.code(),
                    e => crate::error::code_for(e),
                };
                r.error_message = Some(StrBytes::from_string(e.to_string()));
            }
        }
        r.name = Some(name);
        resp.responses.push(r);
    }
    if any_error {
        broker.metrics.error(ApiKey::DeleteTopics);
    }
    resp
}

fn entry(
    name: &str,
    value: String,
    source: i8,
    config_type: i8,
    read_only: bool,
) -> DescribeConfigsResourceResult {
    let mut c = DescribeConfigsResourceResult::default();
    c.name = StrBytes::from_string(name.to_string());
    c.value = Some(StrBytes::from_string(value));
    c.config_source = source;
    c.config_type = config_type;
    c.read_only = read_only;
    c
}

pub fn describe_configs(
    broker: &Arc<Broker>,
    req: DescribeConfigsRequest,
    _version: i16,
) -> DescribeConfigsResponse {
    let mut resp = DescribeConfigsResponse::default();
    let mut any_error = false;
    for res in req.resources {
        let mut r = DescribeConfigsResult::default();
        r.resource_type = res.resource_type;
        r.resource_name = res.resource_name.clone();
        let wanted = |n: &str| {
            res.configuration_keys
                .as_ref()
                .is_none_or(|keys| keys.iter().any(|k| k.as_str() == n))
        };
        match res.resource_type {
            RESOURCE_TOPIC => match broker.log.get_topic(res.resource_name.as_str()) {
                Ok(t) => {
                    let defaults = topic_settings(&TopicConfig::default());
                    for ((name, ty, value), (_, _, default)) in
                        topic_settings(t.config()).into_iter().zip(defaults)
                    {
                        if wanted(name) {
                            let source = if value == default {
                                SOURCE_DEFAULT
                            } else {
                                SOURCE_DYNAMIC_TOPIC
                            };
                            r.configs.push(entry(name, value, source, ty, false));
                        }
                    }
                    if wanted("max.message.bytes") {
                        r.configs.push(entry(
                            "max.message.bytes",
                            broker.config.message_max_bytes.to_string(),
                            SOURCE_STATIC_BROKER,
                            TYPE_INT,
                            true,
                        ));
                    }
                }
                Err(e) => {
                    r.error_code = crate::error::code_for(&e);
                    r.error_message = Some(StrBytes::from_string(e.to_string()));
                }
            },
            RESOURCE_BROKER => {
                let c = &broker.config;
                let all = [
                    ("num.partitions", c.num_partitions.to_string(), TYPE_INT),
                    (
                        "auto.create.topics.enable",
                        c.auto_create_topics.to_string(),
                        TYPE_BOOLEAN,
                    ),
                    (
                        "message.max.bytes",
                        c.message_max_bytes.to_string(),
                        TYPE_INT,
                    ),
                    (
                        "socket.request.max.bytes",
                        c.request_max_bytes.to_string(),
                        TYPE_INT,
                    ),
                    ("default.replication.factor", "1".to_string(), TYPE_INT),
                ];
                for (name, value, ty) in all {
                    if wanted(name) {
                        r.configs
                            .push(entry(name, value, SOURCE_STATIC_BROKER, ty, true));
                    }
                }
            }
            other => {
                r.error_code = ResponseError::InvalidRequest.code();
                r.error_message = Some(StrBytes::from_string(format!(
                    "config resource type {other} is not served (topics and the broker are)"
                )));
            }
        }
        any_error |= r.error_code != 0;
        resp.results.push(r);
    }
    if any_error {
        broker.metrics.error(ApiKey::DescribeConfigs);
    }
    resp
}

pub fn describe_cluster(
    broker: &Arc<Broker>,
    req: DescribeClusterRequest,
    _version: i16,
) -> DescribeClusterResponse {
    let mut resp = DescribeClusterResponse::default();
    resp.endpoint_type = req.endpoint_type;
    resp.cluster_id = StrBytes::from_string(broker.config.cluster_id.clone());
    resp.controller_id = BrokerId(broker.config.node_id);
    let mut b = DescribeClusterBroker::default();
    b.broker_id = BrokerId(broker.config.node_id);
    b.host = StrBytes::from_string(broker.host());
    b.port = broker.port();
    resp.brokers = vec![b];
    resp
}

pub fn create_partitions(
    broker: &Arc<Broker>,
    req: CreatePartitionsRequest,
    _version: i16,
) -> CreatePartitionsResponse {
    let mut resp = CreatePartitionsResponse::default();
    let mut any_error = false;
    for t in req.topics {
        let name = t.name.0.as_str().to_string();
        let mut r = CreatePartitionsTopicResult::default();
        r.name = t.name.clone();
        let outcome: Result<(), (i16, String)> = (|| {
            let topic = broker
                .log
                .get_topic(&name)
                .map_err(|e| (crate::error::code_for(&e), e.to_string()))?;
            let have = topic.num_partitions() as i32;
            if t.count <= have {
                return Err((
                    ResponseError::InvalidPartitions.code(),
                    format!(
                        "topic '{name}' has {have} partitions; it can only grow, not to {}",
                        t.count
                    ),
                ));
            }
            partition_budget(broker, (t.count - have) as u32)
                .map_err(|e| (ResponseError::InvalidPartitions.code(), e))?;
            if t.assignments.as_ref().is_some_and(|a| {
                a.iter()
                    .any(|a| a.broker_ids.iter().any(|b| b.0 != broker.config.node_id))
            }) {
                return Err((
                    ResponseError::InvalidReplicaAssignment.code(),
                    "a single-node broker assigns every partition to itself".into(),
                ));
            }
            if req.validate_only {
                return Ok(());
            }
            broker
                .log
                .add_partitions(&name, t.count as u32)
                .map(|_| ())
                .map_err(|e| match e {
                    LogError::InternalTopic(_) => (
                        ResponseError::TopicAuthorizationFailed.code(),
                        e.to_string(),
                    ),
                    LogError::InvalidArgument(_) => {
                        (ResponseError::InvalidPartitions.code(), e.to_string())
                    }
                    e => (crate::error::code_for(&e), e.to_string()),
                })
        })();
        if let Err((code, msg)) = outcome {
            any_error = true;
            r.error_code = code;
            r.error_message = Some(StrBytes::from_string(msg));
        }
        resp.results.push(r);
    }
    if any_error {
        broker.metrics.error(ApiKey::CreatePartitions);
    }
    resp
}

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;

/// The value `name` has in a default topic config (what "delete this setting" restores).
fn default_value(name: &str) -> Option<String> {
    topic_settings(&TopicConfig::default())
        .into_iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, _, v)| v)
}

/// Apply `options` to topic `name` (or only check them, with `validate_only`): the error code
/// and message of a refusal.
fn apply_topic_options(
    broker: &Broker,
    resource_type: i8,
    name: &str,
    options: Result<TopicOptions, String>,
    validate_only: bool,
) -> Result<(), (i16, String)> {
    if resource_type != RESOURCE_TOPIC {
        return Err((
            ResponseError::InvalidRequest.code(),
            format!(
                "config resource type {resource_type} can't be altered (topics can; the \
                 broker's settings are given at start)"
            ),
        ));
    }
    let options = options.map_err(|e| (ResponseError::InvalidConfig.code(), e))?;
    broker
        .log
        .alter_topic_config(name, &options, validate_only)
        .map(|_| ())
        .map_err(|e| match e {
            LogError::InternalTopic(_) => (
                ResponseError::TopicAuthorizationFailed.code(),
                e.to_string(),
            ),
            LogError::InvalidArgument(_) => (ResponseError::InvalidConfig.code(), e.to_string()),
            e => (crate::error::code_for(&e), e.to_string()),
        })
}

pub fn incremental_alter_configs(
    broker: &Arc<Broker>,
    req: IncrementalAlterConfigsRequest,
    _version: i16,
) -> IncrementalAlterConfigsResponse {
    let mut resp = IncrementalAlterConfigsResponse::default();
    let mut any_error = false;
    for res in req.resources {
        let mut opts = TopicOptions::default();
        let built = res.configs.iter().try_for_each(|c| {
            let name = c.name.as_str();
            match c.config_operation {
                OP_SET => set_option(&mut opts, name, c.value.as_ref().map(|v| v.as_str())),
                OP_DELETE => {
                    let d = default_value(name)
                        .ok_or_else(|| format!("topic config {name:?} is not supported"))?;
                    set_option(&mut opts, name, Some(&d))
                }
                op => Err(format!(
                    "operation {op} on {name:?}: only SET (0) and DELETE (1) apply to the \
                     settings riverbed has"
                )),
            }
        });
        let outcome = apply_topic_options(
            broker,
            res.resource_type,
            res.resource_name.as_str(),
            built.map(|()| opts),
            req.validate_only,
        );
        let mut r = incremental_alter_configs_response::AlterConfigsResourceResponse::default();
        r.resource_type = res.resource_type;
        r.resource_name = res.resource_name;
        if let Err((code, msg)) = outcome {
            any_error = true;
            r.error_code = code;
            r.error_message = Some(StrBytes::from_string(msg));
        }
        resp.responses.push(r);
    }
    if any_error {
        broker.metrics.error(ApiKey::IncrementalAlterConfigs);
    }
    resp
}

/// The legacy AlterConfigs: the given settings replace the topic's, and every setting not
/// given returns to its default (Kafka's semantics for this API).
pub fn alter_configs(
    broker: &Arc<Broker>,
    req: AlterConfigsRequest,
    _version: i16,
) -> AlterConfigsResponse {
    let mut resp = AlterConfigsResponse::default();
    let mut any_error = false;
    for res in req.resources {
        let mut opts = TopicOptions::default();
        let built = topic_settings(&TopicConfig::default())
            .into_iter()
            .try_for_each(|(name, _, v)| set_option(&mut opts, name, Some(&v)))
            .and_then(|()| {
                res.configs.iter().try_for_each(|c| {
                    set_option(
                        &mut opts,
                        c.name.as_str(),
                        c.value.as_ref().map(|v| v.as_str()),
                    )
                })
            });
        let outcome = apply_topic_options(
            broker,
            res.resource_type,
            res.resource_name.as_str(),
            built.map(|()| opts),
            req.validate_only,
        );
        let mut r = alter_configs_response::AlterConfigsResourceResponse::default();
        r.resource_type = res.resource_type;
        r.resource_name = res.resource_name;
        if let Err((code, msg)) = outcome {
            any_error = true;
            r.error_code = code;
            r.error_message = Some(StrBytes::from_string(msg));
        }
        resp.responses.push(r);
    }
    if any_error {
        broker.metrics.error(ApiKey::AlterConfigs);
    }
    resp
}
