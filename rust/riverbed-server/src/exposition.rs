//! The Prometheus text exposition of the broker's metrics, also served over HTTP/1.1 on
//! `metrics_listen` by a tiny responder.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use kafka_protocol::messages::ApiKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::broker::Broker;

/// The Prometheus text exposition of `broker`'s metrics.
pub fn render(broker: &Broker) -> String {
    let m = &broker.metrics;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP riverbed_requests_total Requests received, by API.\n# TYPE riverbed_requests_total counter"
    );
    for key in ApiKey::iter() {
        let n = m.requests_of(key);
        if n > 0 {
            let _ = writeln!(out, "riverbed_requests_total{{api=\"{key:?}\"}} {n}");
        }
    }
    let _ = writeln!(
        out,
        "# HELP riverbed_request_errors_total Responses carrying an error code, by API.\n# TYPE riverbed_request_errors_total counter"
    );
    for key in ApiKey::iter() {
        let n = m.errors_of(key);
        if n > 0 {
            let _ = writeln!(out, "riverbed_request_errors_total{{api=\"{key:?}\"}} {n}");
        }
    }
    let scalars: [(&str, &str, &str, i64); 9] = [
        (
            "riverbed_bytes_in_total",
            "counter",
            "Request bytes received.",
            m.bytes_in.load(Ordering::Relaxed) as i64,
        ),
        (
            "riverbed_bytes_out_total",
            "counter",
            "Response bytes sent.",
            m.bytes_out.load(Ordering::Relaxed) as i64,
        ),
        (
            "riverbed_connections_open",
            "gauge",
            "Open client connections.",
            m.connections_open.load(Ordering::Relaxed),
        ),
        (
            "riverbed_connections_total",
            "counter",
            "Client connections accepted.",
            m.connections_total.load(Ordering::Relaxed) as i64,
        ),
        (
            "riverbed_connections_rejected_total",
            "counter",
            "Connections closed for a malformed or oversized request.",
            m.connections_rejected.load(Ordering::Relaxed) as i64,
        ),
        (
            "riverbed_records_produced_total",
            "counter",
            "Records appended by produce requests.",
            m.records_produced.load(Ordering::Relaxed) as i64,
        ),
        (
            "riverbed_duplicate_batches_total",
            "counter",
            "Idempotent-producer batches recognised as retries and not written again.",
            m.duplicate_batches.load(Ordering::Relaxed) as i64,
        ),
        (
            "riverbed_fetch_gaps_skipped_total",
            "counter",
            "Quarantined or missing offset ranges skipped by fetches.",
            m.gaps_skipped.load(Ordering::Relaxed) as i64,
        ),
        (
            "riverbed_fsyncs_total",
            "counter",
            "Group-commit fsyncs run for produce acknowledgements.",
            broker.durability.fsyncs.load(Ordering::Relaxed) as i64,
        ),
    ];
    for (name, kind, help, v) in scalars {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    }
    // One family's lines together (Prometheus' text format): gather each, then write.
    let mut ends = String::new();
    let mut starts = String::new();
    for name in broker.log.topic_names() {
        let Ok(t) = broker.log.get_topic(&name) else {
            continue;
        };
        for p in t.partitions() {
            let (start, end) = p.offsets();
            let labels = format!("topic=\"{}\",partition=\"{}\"", label_value(&name), p.id);
            let _ = writeln!(ends, "riverbed_partition_end_offset{{{labels}}} {end}");
            let _ = writeln!(
                starts,
                "riverbed_partition_start_offset{{{labels}}} {start}"
            );
        }
    }
    let mut committed = String::new();
    let mut lag = String::new();
    for c in broker.coordinator.committed_offsets() {
        let Some(end) = broker
            .log
            .get_topic(&c.topic)
            .ok()
            .and_then(|t| t.partition(c.partition).ok().map(|p| p.offsets().1))
        else {
            continue; // the topic or partition is gone
        };
        let labels = format!(
            "group=\"{}\",topic=\"{}\",partition=\"{}\"",
            label_value(&c.group),
            label_value(&c.topic),
            c.partition
        );
        let _ = writeln!(
            committed,
            "riverbed_consumer_group_committed_offset{{{labels}}} {}",
            c.offset
        );
        let _ = writeln!(
            lag,
            "riverbed_consumer_group_lag{{{labels}}} {}",
            (end - c.offset).max(0)
        );
    }
    let families = [
        ("riverbed_partition_end_offset", "Next offset to be written, by topic and partition.", ends),
        ("riverbed_partition_start_offset", "Earliest offset kept, by topic and partition.", starts),
        (
            "riverbed_consumer_group_committed_offset",
            "A group's committed offset, by group, topic and partition.",
            committed,
        ),
        (
            "riverbed_consumer_group_lag",
            "Records after a group's committed offset (end offset minus committed), by group, topic and partition.",
            lag,
        ),
    ];
    for (name, help, lines) in families {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{lines}");
    }
    out
}

/// A label value escaped as Prometheus' text format wants (backslash, quote, newline).
fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serve `render(broker)` to every HTTP request on `listener` until the server stops.
pub async fn serve_http(listener: TcpListener, broker: Arc<Broker>) {
    let mut shutdown = broker.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let Ok((mut sock, _)) = accepted else {
            continue;
        };
        let broker = broker.clone();
        tokio::spawn(async move {
            // Read the request head (bounded); the path decides the answer.
            let mut head = Vec::with_capacity(1024);
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                match tokio::time::timeout(std::time::Duration::from_secs(5), sock.read(&mut buf))
                    .await
                {
                    Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
                    _ => return,
                }
            }
            let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
            let line = String::from_utf8_lossy(line);
            let mut parts = line.split_whitespace();
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let (status, body) = if method == "GET" && (path == "/metrics" || path == "/") {
                ("200 OK", render(&broker))
            } else {
                ("404 Not Found", "not found: try GET /metrics\n".to_string())
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}
