//! Requests from the network can't take the broker down: mutated and truncated versions of
//! valid requests (and arbitrary bytes) are decoded, dispatched and answered, or refused with a
//! reason, and never panic. Each case runs the whole handler, produce and fetch included.

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
    let (_tx, shutdown) = tokio::sync::watch::channel(false);
    std::mem::forget(_tx);
    let broker = Arc::new(Broker {
        coordinator: Coordinator::new(log.clone(), &config).expect("coordinator"),
        producers: ProducerTable::open(log.root()).expect("producers"),
        durability: Durability::new(log.options().fsync),
        advertised: "127.0.0.1:9092".parse().expect("addr"),
        log,
        config,
        metrics: Metrics::default(),
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
