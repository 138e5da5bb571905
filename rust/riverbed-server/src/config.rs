//! The broker's settings. Names follow Kafka's broker configs where one exists
//! (`num.partitions`, `auto.create.topics.enable`, `message.max.bytes`,
//! `socket.request.max.bytes`, `group.min.session.timeout.ms`, ...).

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen; port 0 picks a free port (see `Server::bootstrap`).
    pub listen: SocketAddr,
    /// `auto.create.topics.enable` (Kafka's default: true).
    pub auto_create_topics: bool,
    /// `num.partitions`: partitions of an auto-created topic (Kafka's default: 1).
    pub num_partitions: u32,
    /// `message.max.bytes`: the largest record batch a producer may send (Kafka: 1048588).
    pub message_max_bytes: usize,
    /// `socket.request.max.bytes`: the largest request frame (Kafka: 100 MiB).
    pub request_max_bytes: usize,
    /// `group.min.session.timeout.ms` / `group.max.session.timeout.ms`.
    pub group_min_session_timeout_ms: i32,
    pub group_max_session_timeout_ms: i32,
    /// `group.initial.rebalance.delay.ms` (Kafka: 3000; 0 in tests).
    pub group_initial_rebalance_delay_ms: i32,
    /// SASL users file (PLAIN and SCRAM-SHA-256/512); `None` = no authentication.
    pub sasl_users: Option<PathBuf>,
    /// TLS certificate chain and private key (PEM); both or neither.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Serve a non-loopback address without authentication (refused otherwise).
    pub allow_anonymous: bool,
    /// The node id advertised in Metadata / FindCoordinator / DescribeCluster.
    pub node_id: i32,
    /// The cluster id advertised in Metadata / DescribeCluster.
    pub cluster_id: String,
    /// Prometheus text metrics over HTTP, if set.
    pub metrics_listen: Option<SocketAddr>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9092)),
            auto_create_topics: true,
            num_partitions: 1,
            message_max_bytes: 1_048_588,
            request_max_bytes: 100 * 1024 * 1024,
            group_min_session_timeout_ms: 6_000,
            group_max_session_timeout_ms: 1_800_000,
            group_initial_rebalance_delay_ms: 3_000,
            sasl_users: None,
            tls_cert: None,
            tls_key: None,
            allow_anonymous: false,
            node_id: 0,
            cluster_id: "riverbed".into(),
            metrics_listen: None,
        }
    }
}
