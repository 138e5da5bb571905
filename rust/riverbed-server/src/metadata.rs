//! Metadata: one broker (this node), the log's topics (internal ones only when asked by name),
//! topics auto-created per `auto.create.topics.enable` with `num.partitions`.

use std::sync::Arc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use riverbed_log::{LogError, TopicOptions};

use crate::broker::Broker;

pub fn handle(broker: &Arc<Broker>, req: MetadataRequest, version: i16) -> MetadataResponse {
    let node = BrokerId(broker.config.node_id);
    let mut resp = MetadataResponse::default();
    let mut b = MetadataResponseBroker::default();
    b.node_id = node;
    b.host = StrBytes::from_string(broker.host());
    b.port = broker.port();
    resp.brokers = vec![b];
    resp.cluster_id = Some(StrBytes::from_string(broker.config.cluster_id.clone()));
    resp.controller_id = node;
    // v0: an empty list means every topic; v1+: null means every topic.
    let names: Vec<(String, bool)> = match req.topics {
        None => all(broker),
        Some(t) if t.is_empty() && version == 0 => all(broker),
        Some(t) => t
            .into_iter()
            .map(|t| {
                (
                    t.name.map(|n| n.0.as_str().to_string()).unwrap_or_default(),
                    true,
                )
            })
            .collect(),
    };
    // Before v4 clients could not say "don't create".
    let may_create =
        broker.config.auto_create_topics && (version < 4 || req.allow_auto_topic_creation);
    let mut any_error = false;
    for (name, asked) in names {
        let t = describe(broker, &name, asked && may_create);
        any_error |= t.error_code != 0;
        resp.topics.push(t);
    }
    if any_error {
        broker
            .metrics
            .error(kafka_protocol::messages::ApiKey::Metadata);
    }
    resp
}

fn all(broker: &Broker) -> Vec<(String, bool)> {
    broker
        .log
        .topic_names()
        .into_iter()
        .map(|n| (n, false))
        .collect()
}

fn describe(broker: &Broker, name: &str, may_create: bool) -> MetadataResponseTopic {
    let mut t = MetadataResponseTopic::default();
    t.name = Some(TopicName(StrBytes::from_string(name.to_string())));
    let found = match broker.log.get_topic(name) {
        Err(LogError::TopicNotFound(_)) if may_create => {
            let opts = TopicOptions {
                partitions: Some(broker.config.num_partitions),
                ..TopicOptions::default()
            };
            broker.log.topic(name, &opts)
        }
        other => other,
    };
    let topic = match found {
        Ok(topic) => topic,
        Err(e) => {
            t.error_code = match e {
                LogError::InvalidArgument(_) => ResponseError::InvalidTopicException.code(),
                LogError::TopicNotFound(_) => ResponseError::UnknownTopicOrPartition.code(),
                e => crate::error::code_for(&e),
            };
            return t;
        }
    };
    t.is_internal = topic.is_internal();
    let node = BrokerId(broker.config.node_id);
    for p in topic.partitions() {
        let mut mp = MetadataResponsePartition::default();
        mp.partition_index = p.id as i32;
        mp.leader_id = node;
        mp.leader_epoch = 0;
        mp.replica_nodes = vec![node];
        mp.isr_nodes = vec![node];
        t.partitions.push(mp);
    }
    t
}
