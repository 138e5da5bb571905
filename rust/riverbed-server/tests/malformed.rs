//! Requests from the network can't take the broker down: mutated and truncated versions of
//! valid requests (and arbitrary bytes) are decoded, dispatched and answered, or refused with a
//! reason, and never panic. Each case runs the whole handler, produce and fetch included.

/// kafka-protocol 0.18 reserves an array's declared length before reading its elements; with
/// mimalloc (as in the Python extension that hosts the broker) a reservation beyond memory is
/// address space only, and the decode then fails cleanly. See `riverbed_server::server`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, CreateTopicsRequest, FetchRequest, ListOffsetsRequest,
    MetadataRequest, ProduceRequest, RequestHeader, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use proptest::prelude::*;
use riverbed_log::batch::BatchWriter;
use riverbed_log::{Log, LogOptions, TopicOptions};
use riverbed_server::broker::Broker;
use riverbed_server::durability::Durability;
use riverbed_server::groups::Coordinator;
use riverbed_server::metrics::Metrics;
use riverbed_server::producers::ProducerTable;
use riverbed_server::{dispatch, ServerConfig};

fn frame<R: Encodable>(key: ApiKey, version: i16, req: &R) -> Vec<u8> {
    let mut header = RequestHeader::default();
    header.request_api_key = key as i16;
    header.request_api_version = version;
    header.correlation_id = 1;
    header.client_id = Some(StrBytes::from_static_str("fuzz"));
    let mut b = BytesMut::new();
    header
        .encode(&mut b, key.request_header_version(version))
        .expect("header");
    req.encode(&mut b, version).expect("body");
    b.to_vec()
}

fn seeds() -> Vec<Vec<u8>> {
    let mut batch = Vec::new();
    let mut w = BatchWriter::new(&mut batch, 0, 1);
    w.push(
        0,
        1,
        Some(b"k"),
        Some(b"v"),
        &[(b"h".as_slice(), Some(b"x".as_slice()))],
    );
    w.push(1, 2, None, Some(b"w"), &[]);
    w.finish();
    let mut pd = PartitionProduceData::default();
    pd.records = Some(Bytes::from(batch));
    let mut td = TopicProduceData::default();
    td.name = TopicName(StrBytes::from_static_str("f"));
    td.partition_data = vec![pd];
    let mut produce = ProduceRequest::default();
    produce.acks = -1;
    produce.topic_data = vec![td];
    let mut fp = FetchPartition::default();
    fp.partition_max_bytes = 1 << 20;
    let mut ft = FetchTopic::default();
    ft.topic = TopicName(StrBytes::from_static_str("f"));
    ft.partitions = vec![fp];
    let mut fetch = FetchRequest::default();
    fetch.max_wait_ms = 0;
    fetch.topics = vec![ft];
    let mut mt = MetadataRequestTopic::default();
    mt.name = Some(TopicName(StrBytes::from_static_str("f")));
    let mut metadata = MetadataRequest::default();
    metadata.topics = Some(vec![mt]);
    vec![
        frame(ApiKey::Produce, 9, &produce),
        frame(ApiKey::Produce, 3, &produce),
        frame(ApiKey::Fetch, 11, &fetch),
        frame(ApiKey::Fetch, 4, &fetch),
        frame(ApiKey::Metadata, 12, &metadata),
        frame(ApiKey::Metadata, 1, &metadata),
        frame(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()),
        frame(ApiKey::ListOffsets, 6, &ListOffsetsRequest::default()),
        frame(ApiKey::CreateTopics, 5, &CreateTopicsRequest::default()),
    ]
}

struct Harness {
    broker: Arc<Broker>,
    rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

fn harness() -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), LogOptions::default()).expect("log");
    log.topic("f", &TopicOptions::default()).expect("topic");
    let config = ServerConfig {
        auto_create_topics: false,
        ..ServerConfig::default()
    };
    // Marked as stopping, so a mutated fetch's long poll answers at once instead of waiting.
    let (_tx, shutdown) = tokio::sync::watch::channel(true);
    std::mem::forget(_tx);
    let broker = Arc::new(Broker {
        coordinator: Coordinator::new(log.clone(), &config).expect("coordinator"),
        producers: ProducerTable::open(log.root()).expect("producers"),
        durability: Durability::new(log.options().fsync),
        advertised: "127.0.0.1:9092".parse().expect("addr"),
        log,
        config,
        metrics: Metrics::default(),
        users: None,
        shutdown,
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    Harness {
        broker,
        rt,
        _dir: dir,
    }
}

fn run(h: &Harness, bytes: Vec<u8>) {
    if let Ok(pending) = dispatch::handle(&h.broker, Bytes::from(bytes), "127.0.0.1") {
        let _ = h.rt.block_on(pending.finish());
    }
}

/// Every API and version we advertise answers a typical request with a response the protocol
/// crate can encode at that version (a field set outside its versions fails the encoding).
#[test]
fn every_advertised_version_encodes_its_response() {
    let h = harness();
    let mut checked = 0;
    for &(key, lo, hi) in riverbed_server::api_versions::SUPPORTED {
        for version in lo..=hi {
            let Some(bytes) = typical_request(key, version) else {
                continue;
            };
            let pending = dispatch::handle(&h.broker, Bytes::from(bytes), "127.0.0.1")
                .unwrap_or_else(|e| panic!("{key:?} v{version}: {e}"));
            if let Some(frame) = h.rt.block_on(pending.finish()) {
                frame.unwrap_or_else(|e| panic!("{key:?} v{version}: {e}"));
            }
            checked += 1;
        }
    }
    assert!(checked > 60, "only {checked} API versions checked");
}

/// A request naming the topic `f` (partition 0) where the API has topics.
fn typical_request(key: ApiKey, version: i16) -> Option<Vec<u8>> {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::*;
    let name = || TopicName(StrBytes::from_static_str("f"));
    let seeds = seeds();
    let try_frame = |enc: &dyn Fn(&mut BytesMut) -> anyhow::Result<()>| -> Option<Vec<u8>> {
        let mut header = RequestHeader::default();
        header.request_api_key = key as i16;
        header.request_api_version = version;
        header.correlation_id = 1;
        header.client_id = Some(StrBytes::from_static_str("v"));
        let mut b = BytesMut::new();
        header
            .encode(&mut b, key.request_header_version(version))
            .ok()?;
        enc(&mut b).ok()?;
        Some(b.to_vec())
    };
    let _ = &seeds;
    match key {
        ApiKey::Produce => {
            let mut r = ProduceRequest::default();
            r.acks = 1;
            r.topic_data = vec![{
                let mut td = produce_request::TopicProduceData::default();
                td.name = name();
                td.partition_data = vec![{
                    let mut pd = PartitionProduceData::default();
                    let mut batch = Vec::new();
                    let mut w = BatchWriter::new(&mut batch, 0, 1);
                    w.push(0, 1, Some(b"k"), Some(b"v"), &[]);
                    w.finish();
                    pd.records = Some(Bytes::from(batch));
                    pd
                }];
                td
            }];
            try_frame(&|b| r.encode(b, version))
        }
        ApiKey::Fetch => {
            let mut r = FetchRequest::default();
            r.max_wait_ms = 0;
            let mut fp = FetchPartition::default();
            fp.partition_max_bytes = 1 << 20;
            let mut ft = FetchTopic::default();
            ft.topic = name();
            ft.partitions = vec![fp];
            r.topics = vec![ft];
            try_frame(&|b| r.encode(b, version))
        }
        ApiKey::ListOffsets => {
            let mut r = ListOffsetsRequest::default();
            let mut p = ListOffsetsPartition::default();
            p.timestamp = -2;
            let mut t = ListOffsetsTopic::default();
            t.name = name();
            t.partitions = vec![p];
            r.topics = vec![t];
            try_frame(&|b| r.encode(b, version))
        }
        ApiKey::Metadata => {
            let mut r = MetadataRequest::default();
            let mut t = MetadataRequestTopic::default();
            t.name = Some(name());
            r.topics = Some(vec![t]);
            try_frame(&|b| r.encode(b, version))
        }
        ApiKey::FindCoordinator => {
            let mut r = FindCoordinatorRequest::default();
            if version < 4 {
                r.key = StrBytes::from_static_str("g");
            } else {
                r.coordinator_keys = vec![StrBytes::from_static_str("g")];
            }
            try_frame(&|b| r.encode(b, version))
        }
        ApiKey::ApiVersions => try_frame(&|b| ApiVersionsRequest::default().encode(b, version)),
        ApiKey::InitProducerId => {
            let mut r = InitProducerIdRequest::default();
            r.producer_id = ProducerId(-1);
            r.producer_epoch = -1;
            try_frame(&|b| r.encode(b, version))
        }
        ApiKey::CreateTopics => {
            let mut r = CreateTopicsRequest::default();
            let mut t = create_topics_request::CreatableTopic::default();
            t.name = TopicName(StrBytes::from_string(format!("new-{version}")));
            t.num_partitions = 1;
            t.replication_factor = 1;
            r.topics = vec![t];
            try_frame(&|b| r.encode(b, version))
        }
        ApiKey::DeleteTopics => {
            let mut r = DeleteTopicsRequest::default();
            r.topic_names = vec![TopicName(StrBytes::from_static_str("absent"))];
            try_frame(&|b| r.encode(b, version))
        }
        ApiKey::CreatePartitions => {
            let mut r = CreatePartitionsRequest::default();
            let mut t = create_partitions_request::CreatePartitionsTopic::default();
            t.name = name();
            t.count = 1;
            r.topics = vec![t];
            try_frame(&|b| r.encode(b, version))
        }
        ApiKey::DescribeConfigs => {
            let mut r = DescribeConfigsRequest::default();
            let mut res = describe_configs_request::DescribeConfigsResource::default();
            res.resource_type = 2;
            res.resource_name = StrBytes::from_static_str("f");
            r.resources = vec![res];
            try_frame(&|b| r.encode(b, version))
        }
        ApiKey::DescribeCluster => {
            try_frame(&|b| DescribeClusterRequest::default().encode(b, version))
        }
        _ => None, // the group coordinator's APIs are tested with it
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn mutated_requests_never_panic(
        seed in 0usize..9,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        thread_local!(static H: Harness = harness());
        let mut bytes = seeds()[seed].clone();
        for (at, v) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= v;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        H.with(|h| run(h, bytes));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        thread_local!(static H: Harness = harness());
        H.with(|h| run(h, bytes));
    }
}
