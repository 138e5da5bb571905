//! The broker: a tokio runtime on background threads accepting connections and answering
//! each connection's requests in order, until [`Server::stop`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use riverbed_log::Log;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::broker::Broker;
use crate::config::ServerConfig;
use crate::durability::Durability;
use crate::error::ServerError;
use crate::groups::Coordinator;
use crate::metrics::Metrics;
use crate::producers::ProducerTable;

/// How long `stop` waits for requests in flight (a long poll ends at once; a rebalance is
/// failed by the coordinator's shutdown).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

struct Running {
    runtime: tokio::runtime::Runtime,
    shutdown: watch::Sender<bool>,
    /// Signalled by the accept loop once every connection has finished.
    drained: std::sync::mpsc::Receiver<()>,
}

/// A running broker. Dropping it stops it (as [`Server::stop`]).
pub struct Server {
    bootstrap: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    broker: Arc<Broker>,
    running: Mutex<Option<Running>>,
}

impl Server {
    /// Bind `config.listen` (and `config.metrics_listen`) and serve `log` on background threads
    /// until [`Server::stop`].
    pub fn start(log: Log, config: ServerConfig) -> Result<Server, ServerError> {
        crate::security::check_config(&config).map_err(|e| ServerError::Other(e.to_string()))?;
        warn_if_strict_overcommit();
        let users = config
            .sasl_users
            .as_deref()
            .map(crate::sasl::Users::load)
            .transpose()
            .map_err(|e| ServerError::Other(e.to_string()))?;
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(
                crate::tls::acceptor(cert, key).map_err(|e| ServerError::Other(e.to_string()))?,
            ),
            _ => None,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name("riverbed-serve")
            .enable_all()
            .build()
            .map_err(ServerError::Runtime)?;
        // Bound with std and handed to the runtime, so `start` works from any thread, also one
        // that runs another tokio runtime (no `block_on`).
        let bind = |addr: SocketAddr| -> Result<TcpListener, ServerError> {
            let err = |source| ServerError::Bind { addr, source };
            let l = std::net::TcpListener::bind(addr).map_err(err)?;
            l.set_nonblocking(true).map_err(err)?;
            let _entered = runtime.enter();
            TcpListener::from_std(l).map_err(err)
        };
        let listener = bind(config.listen)?;
        let bootstrap = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
        let metrics_listener = config.metrics_listen.map(bind).transpose()?;
        let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
        let advertised = if bootstrap.ip().is_unspecified() {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), bootstrap.port())
        } else {
            bootstrap
        };
        let coordinator = Coordinator::new(log.clone(), &config)
            .map_err(|e| ServerError::Other(e.to_string()))?;
        let producers = ProducerTable::open(log.root()).map_err(ServerError::Other)?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let broker = Arc::new(Broker {
            durability: Durability::new(log.options().fsync),
            log,
            config,
            advertised,
            coordinator,
            producers,
            metrics: Metrics::default(),
            users,
            shutdown: shutdown_rx,
        });
        let (drained_tx, drained) = std::sync::mpsc::channel();
        runtime.spawn(accept_loop(listener, broker.clone(), tls, drained_tx));
        if let Some(l) = metrics_listener {
            runtime.spawn(crate::exposition::serve_http(l, broker.clone()));
        }
        Ok(Server {
            bootstrap,
            metrics_addr,
            broker,
            running: Mutex::new(Some(Running {
                runtime,
                shutdown: shutdown_tx,
                drained,
            })),
        })
    }

    /// The address clients bootstrap from (the bound port when `listen` had port 0).
    pub fn bootstrap(&self) -> SocketAddr {
        self.bootstrap
    }

    /// The bound address of the metrics endpoint, if one was asked for.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Stop accepting, finish requests in flight, flush the log, and return. Idempotent.
    pub fn stop(&self) -> Result<(), ServerError> {
        let Some(running) = self.running.lock().take() else {
            return Ok(());
        };
        let _ = running.shutdown.send(true);
        self.broker.coordinator.shutdown();
        let _ = running.drained.recv_timeout(DRAIN_TIMEOUT);
        running.runtime.shutdown_background();
        self.broker.log.flush()?;
        Ok(())
    }

    /// Prometheus text exposition of the broker's metrics.
    pub fn metrics(&self) -> String {
        crate::exposition::render(&self.broker)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

async fn accept_loop(
    listener: TcpListener,
    broker: Arc<Broker>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    drained: std::sync::mpsc::Sender<()>,
) {
    let mut shutdown = broker.shutdown.clone();
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((sock, peer)) => {
                    let _ = sock.set_nodelay(true);
                    let broker = broker.clone();
                    match tls.clone() {
                        None => {
                            connections.spawn(crate::connection::serve(sock, peer, broker));
                        }
                        Some(acceptor) => {
                            connections.spawn(async move {
                                // A handshake that stalls or fails closes only this connection.
                                let hs = tokio::time::timeout(
                                    Duration::from_secs(10),
                                    acceptor.accept(sock),
                                );
                                match hs.await {
                                    Ok(Ok(stream)) => {
                                        crate::connection::serve(stream, peer, broker).await
                                    }
                                    Ok(Err(e)) => eprintln!(
                                        "riverbed serve: TLS handshake with {peer} failed: {e}"
                                    ),
                                    Err(_) => eprintln!(
                                        "riverbed serve: TLS handshake with {peer} timed out"
                                    ),
                                }
                            });
                        }
                    }
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    eprintln!("riverbed serve: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
    let _ = drained.send(());
}

/// kafka-protocol 0.18 reserves `Vec::with_capacity(n)` for an array length read off the wire
/// before reading any element (upstream fixes are proposed, not released), so a 14-byte request
/// can ask for ~150 GB. Under mimalloc, the allocator of the Python extension (and of our test
/// and example binaries), a reservation beyond memory is only address space when the kernel
/// overcommits (`vm.overcommit_memory` 0 or 1, Linux's default): the decode then fails at the
/// end of the frame and the connection is closed. With strict accounting (2) the reservation
/// fails and the process aborts; say so at start.
fn warn_if_strict_overcommit() {
    if std::fs::read_to_string("/proc/sys/vm/overcommit_memory").is_ok_and(|m| m.trim() == "2") {
        eprintln!(
            "riverbed serve: warning: vm.overcommit_memory is 2 (strict): a crafted request can \
             make the broker's protocol decoder (kafka-protocol 0.18) reserve more memory than \
             the kernel grants, which aborts the process; serve only trusted clients, or set \
             vm.overcommit_memory to 0"
        );
    }
}
