//! Serve a log directory for manual runs and crash tests:
//! `cargo run -p riverbed-server --example serve -- <log dir> <host:port> [KEY=VALUE ...]`.
//! Prints `bootstrap=<addr>` once listening; stops cleanly on stdin EOF.
//! Settings: num.partitions, auto.create.topics.enable, message.max.bytes, metrics.listen,
//! fsync (batch | never | interval:<ms>).

/// kafka-protocol 0.18 reserves an array's declared length before reading its elements; with
/// mimalloc (as in the Python extension that hosts the broker) a reservation beyond memory is
/// address space only, and the decode then fails cleanly. See `riverbed_server::server`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::{BufRead, Write};
use std::time::Duration;

use riverbed_log::{FsyncPolicy, Log, LogOptions};
use riverbed_server::{Server, ServerConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        return Err("usage: serve <log dir> <host:port> [KEY=VALUE ...]".into());
    }
    let mut config = ServerConfig {
        listen: args[1].parse()?,
        group_initial_rebalance_delay_ms: 0,
        ..ServerConfig::default()
    };
    let mut options = LogOptions::default();
    for kv in &args[2..] {
        let (k, v) = kv
            .split_once('=')
            .ok_or(format!("{kv}: expected KEY=VALUE"))?;
        match k {
            "num.partitions" => config.num_partitions = v.parse()?,
            "auto.create.topics.enable" => config.auto_create_topics = v.parse()?,
            "message.max.bytes" => config.message_max_bytes = v.parse()?,
            "metrics.listen" => config.metrics_listen = Some(v.parse()?),
            "fsync" => {
                options.fsync = match v {
                    "batch" => FsyncPolicy::Batch,
                    "never" => FsyncPolicy::Never,
                    v => match v.strip_prefix("interval:") {
                        Some(ms) => FsyncPolicy::Interval(Duration::from_millis(ms.parse()?)),
                        None => {
                            return Err(format!("fsync={v}: batch, never or interval:<ms>").into())
                        }
                    },
                }
            }
            _ => return Err(format!("unknown setting {k}").into()),
        }
    }
    let log = Log::open(&args[0], options)?;
    let server = Server::start(log.clone(), config)?;
    println!("bootstrap={}", server.bootstrap());
    std::io::stdout().flush()?;
    // Run until stdin closes (a parent that dies closes it too).
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        if line?.trim() == "metrics" {
            print!("{}", server.metrics());
            std::io::stdout().flush()?;
        }
    }
    server.stop()?;
    log.close()?;
    Ok(())
}
