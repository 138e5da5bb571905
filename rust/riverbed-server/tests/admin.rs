//! Topic administration and lookups from a real client (librdkafka's admin client and
//! consumer): create (with configs), describe configs, delete; Metadata auto-creation with
//! `num.partitions`; ListOffsets earliest/latest and by timestamp.

use std::time::Duration;

use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewPartitions, NewTopic, OwnedResourceSpecifier,
    ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use riverbed_log::{Cleanup, Log, LogOptions, TopicOptions};
use riverbed_server::{Server, ServerConfig};

const T: Duration = Duration::from_secs(20);

fn serve(log: &Log) -> Server {
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        num_partitions: 3,
        ..ServerConfig::default()
    };
    Server::start(log.clone(), config).expect("start")
}

#[test]
fn create_describe_and_delete_topics_with_the_admin_client() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), LogOptions::default()).expect("log");
    let server = serve(&log);
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", server.bootstrap().to_string())
        .create()
        .expect("admin");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let opts = AdminOptions::new().operation_timeout(Some(T));
    let made = rt
        .block_on(
            admin.create_topics(
                &[
                    NewTopic::new("orders", 4, TopicReplication::Fixed(1))
                        .set("retention.ms", "60000")
                        .set("cleanup.policy", "compact"),
                    NewTopic::new("replicated", 1, TopicReplication::Fixed(3)),
                    NewTopic::new("odd", 1, TopicReplication::Fixed(1)).set("flush.messages", "1"),
                ],
                &opts,
            ),
        )
        .expect("create");
    assert_eq!(made[0], Ok("orders".to_string()));
    assert_eq!(
        made[1],
        Err((
            "replicated".to_string(),
            RDKafkaErrorCode::InvalidReplicationFactor
        ))
    );
    assert_eq!(
        made[2],
        Err(("odd".to_string(), RDKafkaErrorCode::InvalidConfig))
    );
    let orders = log.get_topic("orders").expect("created in the log");
    assert_eq!(orders.num_partitions(), 4);
    assert_eq!(orders.config().retention_ms, Some(60_000));
    assert_eq!(orders.config().cleanup, Cleanup::Compact);
    assert!(log.get_topic("replicated").is_err());

    let again = rt
        .block_on(admin.create_topics(
            &[NewTopic::new("orders", 1, TopicReplication::Fixed(1))],
            &opts,
        ))
        .expect("create");
    assert_eq!(
        again[0],
        Err(("orders".to_string(), RDKafkaErrorCode::TopicAlreadyExists))
    );

    let described = rt
        .block_on(admin.describe_configs(&[ResourceSpecifier::Topic("orders")], &opts))
        .expect("describe");
    let res = described[0].as_ref().expect("topic described");
    let get = |n: &str| res.get(n).and_then(|e| e.value.clone());
    assert_eq!(get("retention.ms").as_deref(), Some("60000"));
    assert_eq!(get("cleanup.policy").as_deref(), Some("compact"));
    assert_eq!(get("segment.bytes").as_deref(), Some("1073741824"));

    // AlterConfigs (the legacy API librdkafka's alter_configs uses): the settings given replace
    // the topic's; the others return to their defaults.
    let altered = rt
        .block_on(
            admin.alter_configs(
                &[AlterConfig::new(ResourceSpecifier::Topic("orders"))
                    .set("retention.ms", "120000")
                    .set("cleanup.policy", "compact")],
                &opts,
            ),
        )
        .expect("alter");
    assert_eq!(
        altered[0],
        Ok(OwnedResourceSpecifier::Topic("orders".to_string()))
    );
    // A compacted topic may not go back to delete: refused (the rdkafka crate does not pass a
    // resource's error on from alter_configs, so the log is what tells).
    rt.block_on(admin.alter_configs(
        &[AlterConfig::new(ResourceSpecifier::Topic("orders")).set("cleanup.policy", "delete")],
        &opts,
    ))
    .expect("alter");
    let orders = log.get_topic("orders").expect("orders");
    assert_eq!(orders.config().retention_ms, Some(120_000));
    assert_eq!(orders.config().cleanup, Cleanup::Compact);

    let grown = rt
        .block_on(admin.create_partitions(
            &[
                NewPartitions::new("orders", 6),
                NewPartitions::new("orders-x", 2),
            ],
            &opts,
        ))
        .expect("create partitions");
    assert_eq!(grown[0], Ok("orders".to_string()));
    assert_eq!(
        grown[1],
        Err((
            "orders-x".to_string(),
            RDKafkaErrorCode::UnknownTopicOrPartition
        ))
    );
    assert_eq!(log.get_topic("orders").expect("orders").num_partitions(), 6);
    let shrink = rt
        .block_on(admin.create_partitions(&[NewPartitions::new("orders", 2)], &opts))
        .expect("create partitions");
    assert_eq!(
        shrink[0],
        Err(("orders".to_string(), RDKafkaErrorCode::InvalidPartitions))
    );

    let deleted = rt
        .block_on(admin.delete_topics(&["orders", "missing"], &opts))
        .expect("delete");
    assert_eq!(deleted[0], Ok("orders".to_string()));
    assert_eq!(
        deleted[1],
        Err((
            "missing".to_string(),
            RDKafkaErrorCode::UnknownTopicOrPartition
        ))
    );
    assert!(log.get_topic("orders").is_err());
}

#[test]
fn metadata_auto_creates_and_list_offsets_finds_times() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), LogOptions::default()).expect("log");
    let ticks = log.topic("ticks", &TopicOptions::default()).expect("topic");
    for i in 0..10i64 {
        ticks
            .produce(Some(b"k"), Some(b"v"), 1_000 * i, &[], Some(0))
            .expect("produce");
    }
    let server = serve(&log);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", server.bootstrap().to_string())
        .set("group.id", "unused")
        .set("allow.auto.create.topics", "true")
        .create()
        .expect("consumer");
    let md = consumer.fetch_metadata(Some("fresh"), T).expect("metadata");
    assert_eq!(md.topics()[0].name(), "fresh");
    assert_eq!(md.topics()[0].partitions().len(), 3, "num.partitions");
    assert_eq!(
        log.get_topic("fresh")
            .expect("auto-created")
            .num_partitions(),
        3
    );
    assert_eq!(md.brokers().len(), 1);
    assert_eq!(md.brokers()[0].port(), i32::from(server.bootstrap().port()));

    assert_eq!(
        consumer
            .fetch_watermarks("ticks", 0, T)
            .expect("watermarks"),
        (0, 10)
    );
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("ticks", 0, Offset::Offset(5_500))
        .expect("tpl");
    let found = consumer.offsets_for_times(tpl, T).expect("by time");
    let off = found.elements()[0].offset();
    assert_eq!(
        off,
        Offset::Offset(6),
        "first record at or after t=5500 is offset 6"
    );
    let mut late = TopicPartitionList::new();
    late.add_partition_offset("ticks", 0, Offset::Offset(99_000))
        .expect("tpl");
    let none = consumer.offsets_for_times(late, T).expect("by time");
    assert_eq!(none.elements()[0].offset(), Offset::End);
}
