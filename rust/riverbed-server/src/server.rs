//! The broker: a tokio runtime on background threads accepting connections and answering
//! each connection's requests in order.

use std::net::SocketAddr;

use riverbed_log::Log;

use crate::config::ServerConfig;

/// A running broker. Dropping it stops it (as [`Server::stop`]).
pub struct Server {
    bootstrap: SocketAddr,
}

impl Server {
    /// Bind `config.listen` and serve `log` until [`Server::stop`].
    pub fn start(log: Log, config: ServerConfig) -> anyhow::Result<Server> {
        let _ = (log, config);
        anyhow::bail!("not yet implemented")
    }

    /// The address clients bootstrap from (the bound port when `listen` had port 0).
    pub fn bootstrap(&self) -> SocketAddr {
        self.bootstrap
    }

    /// Stop accepting, finish requests in flight, flush the log, and return.
    pub fn stop(&self) -> anyhow::Result<()> {
        Ok(())
    }

    /// Prometheus text exposition of the broker's metrics.
    pub fn metrics(&self) -> String {
        String::new()
    }
}
