//! The wire, byte by byte (requests encoded with the `kafka-protocol` crate): bad input closes
//! only its own connection; produce validation answers with Kafka's error codes; a retried
//! idempotent batch is recognised also after a restart; acks=0 gets no response; a long-polling
//! fetch is woken by an append.

/// kafka-protocol 0.18 reserves an array's declared length before reading its elements; with
/// mimalloc (as in the Python extension that hosts the broker) a reservation beyond memory is
/// address space only, and the decode then fails cleanly. See `riverbed_server::server`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, FetchRequest, FetchResponse, ProduceRequest,
    ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::messages::{MetadataRequest, MetadataResponse};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::ResponseError;
use riverbed_log::batch::BatchWriter;
use riverbed_log::{Log, LogOptions, TopicOptions};
use riverbed_server::{Server, ServerConfig};

fn serve(log: &Log) -> Server {
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        ..ServerConfig::default()
    };
    Server::start(log.clone(), config).expect("start")
}

fn connect(server: &Server) -> TcpStream {
    let s = TcpStream::connect(server.bootstrap()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s
}

fn send<R: Encodable>(s: &mut TcpStream, key: ApiKey, version: i16, corr: i32, req: &R) {
    let mut header = RequestHeader::default();
    header.request_api_key = key as i16;
    header.request_api_version = version;
    header.correlation_id = corr;
    header.client_id = Some(StrBytes::from_static_str("wire-test"));
    let mut body = BytesMut::new();
    header
        .encode(&mut body, key.request_header_version(version))
        .expect("header");
    req.encode(&mut body, version).expect("body");
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    s.write_all(&frame).expect("write");
}

/// Read one response frame; `None` if the connection was closed.
fn recv(s: &mut TcpStream) -> Option<Bytes> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).ok()?;
    Some(Bytes::from(body))
}

fn call<R: Encodable, P: Decodable>(
    s: &mut TcpStream,
    key: ApiKey,
    version: i16,
    corr: i32,
    req: &R,
) -> P {
    send(s, key, version, corr, req);
    let mut b = recv(s).expect("response");
    let h = ResponseHeader::decode(&mut b, key.response_header_version(version)).expect("header");
    assert_eq!(h.correlation_id, corr);
    P::decode(&mut b, version).expect("decode")
}

fn api_versions_works(s: &mut TcpStream) {
    let r: ApiVersionsResponse = call(s, ApiKey::ApiVersions, 3, 7, &ApiVersionsRequest::default());
    assert_eq!(r.error_code, 0);
    assert!(r
        .api_keys
        .iter()
        .any(|k| k.api_key == ApiKey::Produce as i16));
}

/// Whether the server closed `s` (reads EOF or a reset) within a few seconds.
fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

#[test]
fn bad_frames_close_only_their_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), LogOptions::default()).expect("log");
    let server = serve(&log);
    let mut good = connect(&server);
    api_versions_works(&mut good);

    // Garbage: a plausible length, then bytes that are no request.
    let mut g = connect(&server);
    g.write_all(&[0, 0, 0, 12, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8])
        .expect("write");
    assert!(closed(&mut g), "garbage did not close the connection");
    api_versions_works(&mut good);

    // A 2 GiB length prefix: closed without reading (or allocating) a body.
    let mut huge = connect(&server);
    huge.write_all(&0x7fff_ffffu32.to_be_bytes())
        .expect("write");
    assert!(closed(&mut huge));
    let mut neg = connect(&server);
    neg.write_all(&(-5i32).to_be_bytes()).expect("write");
    assert!(closed(&mut neg));
    api_versions_works(&mut good);

    // A truncated frame: the client goes away mid-request; the server carries on.
    let mut t = connect(&server);
    t.write_all(&[0, 0, 1, 0, 0, 18, 0]).expect("write");
    drop(t);
    // An unknown API key.
    let mut u = connect(&server);
    u.write_all(&[0, 0, 0, 10, 0x7f, 0x00, 0, 0, 0, 0, 0, 1, 0, 0])
        .expect("write");
    assert!(closed(&mut u));
    api_versions_works(&mut good);
    // Garbage, 2 GiB, negative, truncated, unknown key: five closed, each counted once.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut m = server.metrics();
    let settled = |m: &str| {
        m.contains("riverbed_connections_rejected_total 5")
            && m.contains("riverbed_connections_open 1\n")
    };
    while !settled(&m) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        m = server.metrics();
    }
    assert!(m.contains("riverbed_connections_rejected_total 5"), "{m}");
    assert!(m.contains("riverbed_connections_open 1"), "{m}");
}

/// An idempotent batch of `n` records from producer `pid`, sequence `seq`.
fn idem_batch(pid: i64, epoch: i16, seq: i32, n: usize, tag: &str) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = BatchWriter::new(&mut buf, 0, 1_000);
    for i in 0..n {
        let v = format!("{tag}-{i}");
        w.push(
            i as i64,
            1_000 + i as i64,
            Some(b"k"),
            Some(v.as_bytes()),
            &[],
        );
    }
    w.finish();
    buf[43..51].copy_from_slice(&pid.to_be_bytes());
    buf[51..53].copy_from_slice(&epoch.to_be_bytes());
    buf[53..57].copy_from_slice(&seq.to_be_bytes());
    let crc = crc32c::crc32c(&buf[21..]);
    buf[17..21].copy_from_slice(&crc.to_be_bytes());
    buf
}

fn produce_req(topic: &str, partition: i32, records: Vec<u8>, acks: i16) -> ProduceRequest {
    let mut pd = PartitionProduceData::default();
    pd.index = partition;
    pd.records = Some(Bytes::from(records));
    let mut td = TopicProduceData::default();
    td.name = TopicName(StrBytes::from_string(topic.to_string()));
    td.partition_data = vec![pd];
    let mut r = ProduceRequest::default();
    r.acks = acks;
    r.timeout_ms = 30_000;
    r.topic_data = vec![td];
    r
}

fn produce(s: &mut TcpStream, corr: i32, req: &ProduceRequest) -> (i16, i64) {
    let r: ProduceResponse = call(s, ApiKey::Produce, 9, corr, req);
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

#[test]
fn produce_validation_answers_with_kafka_error_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), LogOptions::default()).expect("log");
    log.topic("t", &TopicOptions::default()).expect("topic");
    let server = serve(&log);
    let mut s = connect(&server);
    let good = idem_batch(-1, -1, -1, 3, "a");
    assert_eq!(
        produce(&mut s, 1, &produce_req("t", 0, good.clone(), -1)),
        (0, 0)
    );
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 1] ^= 0x55;
    assert_eq!(
        produce(&mut s, 2, &produce_req("t", 0, bad, -1)).0,
        ResponseError::CorruptMessage.code()
    );
    assert_eq!(
        produce(
            &mut s,
            3,
            &produce_req("t", 0, good[..good.len() - 4].to_vec(), -1)
        )
        .0,
        ResponseError::CorruptMessage.code()
    );
    assert_eq!(
        produce(&mut s, 4, &produce_req("nope", 0, good.clone(), -1)).0,
        ResponseError::UnknownTopicOrPartition.code()
    );
    assert_eq!(
        produce(&mut s, 5, &produce_req("t", 9, good.clone(), -1)).0,
        ResponseError::UnknownTopicOrPartition.code()
    );
    let big = idem_batch(-1, -1, -1, 2, &"x".repeat(2 << 20));
    assert_eq!(
        produce(&mut s, 6, &produce_req("t", 0, big, -1)).0,
        ResponseError::MessageTooLarge.code()
    );
    assert_eq!(
        produce(
            &mut s,
            7,
            &produce_req("__consumer_offsets", 0, good.clone(), -1)
        )
        .0,
        ResponseError::InvalidTopicException.code()
    );
    // Only the first, valid batch was stored, as sent but for its base offset.
    let p = log
        .get_topic("t")
        .expect("t")
        .partition(0)
        .expect("p")
        .clone();
    assert_eq!(p.offsets(), (0, 3));
    let stored = p.read_raw(0, 1 << 20).expect("read");
    assert_eq!(stored.bytes, good);
    // acks=0: no response at all; the next request's response is the next frame.
    send(
        &mut s,
        ApiKey::Produce,
        9,
        8,
        &produce_req("t", 0, good.clone(), 0),
    );
    let (code, base) = produce(&mut s, 9, &produce_req("t", 0, good, 1));
    assert_eq!((code, base), (0, 6));
}

#[test]
fn a_retried_idempotent_batch_is_not_written_twice_even_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = Log::open(dir.path(), LogOptions::default()).expect("log");
        log.topic("t", &TopicOptions::default()).expect("topic");
        let server = serve(&log);
        let mut s = connect(&server);
        assert_eq!(
            produce(
                &mut s,
                1,
                &produce_req("t", 0, idem_batch(42, 0, 0, 5, "a"), -1)
            ),
            (0, 0)
        );
        assert_eq!(
            produce(
                &mut s,
                2,
                &produce_req("t", 0, idem_batch(42, 0, 5, 2, "b"), -1)
            ),
            (0, 5)
        );
        // The retry of the first batch: its original offset, no error, nothing written.
        assert_eq!(
            produce(
                &mut s,
                3,
                &produce_req("t", 0, idem_batch(42, 0, 0, 5, "a"), -1)
            ),
            (0, 0)
        );
        // A gap in the sequence.
        assert_eq!(
            produce(
                &mut s,
                4,
                &produce_req("t", 0, idem_batch(42, 0, 9, 1, "c"), -1)
            )
            .0,
            ResponseError::OutOfOrderSequenceNumber.code()
        );
        server.stop().expect("stop");
        log.close().expect("close");
    }
    let log = Log::open(dir.path(), LogOptions::default()).expect("reopen");
    let server = serve(&log);
    let mut s = connect(&server);
    // After the restart the retry of the second batch is still recognised.
    assert_eq!(
        produce(
            &mut s,
            1,
            &produce_req("t", 0, idem_batch(42, 0, 5, 2, "b"), -1)
        ),
        (0, 5)
    );
    assert_eq!(
        produce(
            &mut s,
            2,
            &produce_req("t", 0, idem_batch(42, 0, 7, 1, "c"), -1)
        ),
        (0, 7)
    );
    assert_eq!(
        produce(
            &mut s,
            3,
            &produce_req("t", 0, idem_batch(42, -1, 8, 1, "d"), -1)
        )
        .0,
        ResponseError::InvalidProducerEpoch.code()
    );
    let p = log
        .get_topic("t")
        .expect("t")
        .partition(0)
        .expect("p")
        .clone();
    assert_eq!(p.offsets(), (0, 8));
}

#[test]
fn a_long_poll_is_woken_by_an_append() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), LogOptions::default()).expect("log");
    let topic = log.topic("t", &TopicOptions::default()).expect("topic");
    let server = serve(&log);
    let mut s = connect(&server);
    let mut fp = FetchPartition::default();
    fp.partition = 0;
    fp.fetch_offset = 0;
    fp.partition_max_bytes = 1 << 20;
    let mut ft = FetchTopic::default();
    ft.topic = TopicName(StrBytes::from_static_str("t"));
    ft.partitions = vec![fp];
    let mut req = FetchRequest::default();
    req.max_wait_ms = 10_000;
    req.min_bytes = 1;
    req.max_bytes = 50 << 20;
    req.topics = vec![ft];
    let started = Instant::now();
    let appender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        topic
            .produce(Some(b"k"), Some(b"v"), 5, &[], Some(0))
            .expect("produce");
    });
    let r: FetchResponse = call(&mut s, ApiKey::Fetch, 11, 1, &req);
    let waited = started.elapsed();
    appender.join().expect("appender");
    let p = &r.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    assert_eq!(p.high_watermark, 1);
    assert!(p.records.as_ref().is_some_and(|b| !b.is_empty()));
    assert!(
        waited >= Duration::from_millis(250),
        "answered before the append: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(5),
        "not woken by the append: {waited:?}"
    );
}

fn fetch_req(topic: &str, offset: i64, partition_max: i32) -> FetchRequest {
    let mut fp = FetchPartition::default();
    fp.partition = 0;
    fp.fetch_offset = offset;
    fp.partition_max_bytes = partition_max;
    let mut ft = FetchTopic::default();
    ft.topic = TopicName(StrBytes::from_string(topic.to_string()));
    ft.partitions = vec![fp];
    let mut req = FetchRequest::default();
    req.max_wait_ms = 0;
    req.min_bytes = 0;
    req.max_bytes = 50 << 20;
    req.topics = vec![ft];
    req
}

/// (error code, base offsets of the batches served, high watermark).
fn fetch(s: &mut TcpStream, corr: i32, req: &FetchRequest) -> (i16, Vec<i64>, i64) {
    let r: FetchResponse = call(s, ApiKey::Fetch, 11, corr, req);
    let p = &r.responses[0].partitions[0];
    let mut bases = Vec::new();
    let bytes = p.records.clone().unwrap_or_default();
    let mut pos = 0;
    while pos + 12 <= bytes.len() {
        bases.push(i64::from_be_bytes(
            bytes[pos..pos + 8].try_into().expect("8"),
        ));
        pos += 12 + i32::from_be_bytes(bytes[pos + 8..pos + 12].try_into().expect("4")) as usize;
    }
    assert_eq!(pos, bytes.len(), "whole batches only");
    (p.error_code, bases, p.high_watermark)
}

#[test]
fn fetch_serves_whole_batches_by_size_and_skips_quarantined_ranges() {
    let dir = tempfile::tempdir().expect("tempdir");
    let batch_len;
    {
        let log = Log::open(dir.path(), LogOptions::default()).expect("log");
        let t = log.topic("q", &TopicOptions::default()).expect("topic");
        for i in 0..30 {
            // One record per produce call: one batch per offset, all of one size.
            t.produce(
                Some(b"k"),
                Some(format!("value-{i:03}").as_bytes()),
                i,
                &[],
                Some(0),
            )
            .expect("produce");
        }
        batch_len = (t.partition(0).expect("p").size_bytes() / 30) as usize;
        log.close().expect("close");
    }
    // Damage the batch of offset 10 (one byte of its value): valid batches follow, so recovery
    // quarantines offsets 10..11 and keeps the rest.
    let seg = dir.path().join("q/0/00000000000000000000.log");
    let mut bytes = std::fs::read(&seg).expect("segment");
    bytes[10 * batch_len + batch_len - 3] ^= 0xff;
    std::fs::write(&seg, &bytes).expect("write");
    let log = Log::open(dir.path(), LogOptions::default()).expect("reopen");
    assert!(
        log.open_report()
            .iter()
            .any(|d| d.offsets == Some((10, 11))),
        "{:?}",
        log.open_report()
    );
    let server = serve(&log);
    let mut s = connect(&server);
    // The first batch is served whole even over the limit; then whole batches that fit.
    assert_eq!(fetch(&mut s, 1, &fetch_req("q", 0, 10)), (0, vec![0], 30));
    assert_eq!(
        fetch(&mut s, 2, &fetch_req("q", 3, (2 * batch_len) as i32)),
        (0, vec![3, 4], 30)
    );
    // Up to the quarantined range, then past it; the skip is counted.
    let (code, bases, _) = fetch(&mut s, 3, &fetch_req("q", 5, 1 << 20));
    assert_eq!((code, bases), (0, (5..10).collect::<Vec<i64>>()));
    let (code, bases, _) = fetch(&mut s, 4, &fetch_req("q", 10, 1 << 20));
    assert_eq!((code, bases), (0, (11..30).collect::<Vec<i64>>()));
    assert!(server
        .metrics()
        .contains("riverbed_fetch_gaps_skipped_total 1"));
    // Past the end: OFFSET_OUT_OF_RANGE; at the end: nothing, no error.
    assert_eq!(
        fetch(&mut s, 5, &fetch_req("q", 31, 1 << 20)).0,
        ResponseError::OffsetOutOfRange.code()
    );
    assert_eq!(
        fetch(&mut s, 6, &fetch_req("q", 30, 1 << 20)),
        (0, vec![], 30)
    );
}

#[test]
fn metadata_lists_user_topics_and_internal_ones_only_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), LogOptions::default()).expect("log");
    log.topic("visible", &TopicOptions::default())
        .expect("topic");
    assert!(log.get_topic("__consumer_offsets").is_ok());
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        auto_create_topics: false,
        ..ServerConfig::default()
    };
    let server = Server::start(log.clone(), config).expect("start");
    let mut s = connect(&server);
    let mut every = MetadataRequest::default();
    every.topics = None; // v1+: null asks for every topic
    let all: MetadataResponse = call(&mut s, ApiKey::Metadata, 9, 1, &every);
    let names: Vec<String> = all
        .topics
        .iter()
        .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
        .collect();
    assert_eq!(names, vec!["visible".to_string()]);
    let mut req = MetadataRequest::default();
    req.topics = Some(
        ["__consumer_offsets", "absent"]
            .into_iter()
            .map(|n| {
                let mut t = MetadataRequestTopic::default();
                t.name = Some(TopicName(StrBytes::from_static_str(n)));
                t
            })
            .collect(),
    );
    req.allow_auto_topic_creation = true;
    let named: MetadataResponse = call(&mut s, ApiKey::Metadata, 9, 2, &req);
    assert_eq!(named.topics[0].error_code, 0);
    assert!(named.topics[0].is_internal);
    assert_eq!(
        named.topics[1].error_code,
        ResponseError::UnknownTopicOrPartition.code(),
        "auto.create.topics.enable=false"
    );
    assert!(log.get_topic("absent").is_err());
}

#[test]
fn metrics_are_served_over_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), LogOptions::default()).expect("log");
    log.topic("m", &TopicOptions::default()).expect("topic");
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        metrics_listen: Some("127.0.0.1:0".parse().expect("addr")),
        ..ServerConfig::default()
    };
    let server = Server::start(log.clone(), config).expect("start");
    let mut s = connect(&server);
    api_versions_works(&mut s);
    assert_eq!(
        produce(
            &mut s,
            2,
            &produce_req("m", 0, idem_batch(-1, -1, -1, 4, "x"), -1)
        ),
        (0, 0)
    );
    let mut http =
        TcpStream::connect(server.metrics_addr().expect("metrics addr")).expect("connect");
    http.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let mut text = String::new();
    http.read_to_string(&mut text).expect("read");
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(
        text.contains("riverbed_requests_total{api=\"ApiVersions\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("riverbed_requests_total{api=\"Produce\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("riverbed_partition_end_offset{topic=\"m\",partition=\"0\"} 4"),
        "{text}"
    );
    assert!(text.contains("riverbed_connections_open 1"), "{text}");
}

#[test]
fn a_huge_array_length_closes_the_connection_without_aborting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), LogOptions::default()).expect("log");
    let server = serve(&log);
    let mut good = connect(&server);
    // Metadata v1: header (key 3, version 1, correlation 1, client id "x"), then a topic
    // array claiming i32::MAX entries in a 4-byte body. Decoding it as is would reserve
    // tens of GiB up front, and a failed allocation aborts the whole process.
    let mut bad = connect(&server);
    let body: Vec<u8> = [
        &3i16.to_be_bytes()[..],
        &1i16.to_be_bytes(),
        &1i32.to_be_bytes(),
        &1i16.to_be_bytes(),
        b"x",
        &i32::MAX.to_be_bytes(),
    ]
    .concat();
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    bad.write_all(&frame).expect("write");
    assert!(closed(&mut bad));
    api_versions_works(&mut good);
}

#[test]
fn incremental_alter_configs_sets_and_deletes_topic_settings() {
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    use kafka_protocol::messages::{
        IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), LogOptions::default()).expect("log");
    log.topic(
        "c",
        &TopicOptions {
            retention_bytes: Some(Some(1 << 20)),
            ..Default::default()
        },
    )
    .expect("topic");
    let server = serve(&log);
    let mut s = connect(&server);
    let cfg = |name: &'static str, op: i8, value: Option<&'static str>| {
        let mut c = AlterableConfig::default();
        c.name = StrBytes::from_static_str(name);
        c.config_operation = op;
        c.value = value.map(StrBytes::from_static_str);
        c
    };
    let mut res = AlterConfigsResource::default();
    res.resource_type = 2;
    res.resource_name = StrBytes::from_static_str("c");
    res.configs = vec![
        cfg("retention.ms", 0, Some("3600000")),
        cfg("retention.bytes", 1, None),
        cfg("segment.bytes", 0, Some("65536")),
    ];
    let mut bad = AlterConfigsResource::default();
    bad.resource_type = 2;
    bad.resource_name = StrBytes::from_static_str("c");
    bad.configs = vec![cfg("flush.ms", 0, Some("1"))];
    let mut req = IncrementalAlterConfigsRequest::default();
    req.resources = vec![res, bad];
    let r: IncrementalAlterConfigsResponse =
        call(&mut s, ApiKey::IncrementalAlterConfigs, 1, 1, &req);
    assert_eq!(r.responses[0].error_code, 0);
    assert_eq!(
        r.responses[1].error_code,
        ResponseError::InvalidConfig.code()
    );
    let c = log.get_topic("c").expect("c");
    assert_eq!(c.config().retention_ms, Some(3_600_000));
    assert_eq!(
        c.config().retention_bytes,
        None,
        "DELETE restores the default"
    );
    assert_eq!(c.config().segment_bytes, 65_536);
}

#[test]
fn producer_ids_are_handed_out_and_transactions_refused_as_kafka_refuses_them() {
    use kafka_protocol::messages::{
        InitProducerIdRequest, InitProducerIdResponse, ProducerId, TransactionalId,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), LogOptions::default()).expect("log");
    let server = serve(&log);
    let mut s = connect(&server);
    let mut plain = InitProducerIdRequest::default();
    plain.producer_id = ProducerId(-1);
    plain.producer_epoch = -1;
    let a: InitProducerIdResponse = call(&mut s, ApiKey::InitProducerId, 4, 1, &plain);
    let b: InitProducerIdResponse = call(&mut s, ApiKey::InitProducerId, 4, 2, &plain);
    assert_eq!((a.error_code, a.producer_epoch), (0, 0));
    assert!(
        b.producer_id.0 > a.producer_id.0,
        "ids are never handed out twice"
    );
    // KIP-360: a producer that knows its id gets the next epoch.
    let mut bump = plain.clone();
    bump.producer_id = a.producer_id;
    bump.producer_epoch = 0;
    let c: InitProducerIdResponse = call(&mut s, ApiKey::InitProducerId, 4, 3, &bump);
    assert_eq!((c.producer_id, c.producer_epoch), (a.producer_id, 1));
    let mut txn = plain.clone();
    txn.transactional_id = Some(TransactionalId(StrBytes::from_static_str("tx-1")));
    let t: InitProducerIdResponse = call(&mut s, ApiKey::InitProducerId, 4, 4, &txn);
    assert_eq!(
        t.error_code,
        ResponseError::TransactionalIdAuthorizationFailed.code()
    );
    // A transactional produce is refused per partition, nothing written.
    log.topic("t", &TopicOptions::default()).expect("topic");
    let mut req = produce_req("t", 0, idem_batch(a.producer_id.0, 0, 0, 1, "x"), -1);
    req.transactional_id = Some(TransactionalId(StrBytes::from_static_str("tx-1")));
    assert_eq!(
        produce(&mut s, 5, &req).0,
        ResponseError::TransactionalIdAuthorizationFailed.code()
    );
    assert_eq!(
        log.get_topic("t")
            .expect("t")
            .partition(0)
            .expect("p")
            .offsets(),
        (0, 0)
    );
}
