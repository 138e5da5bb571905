//! The state every connection shares: the log, the settings, the group coordinator, the
//! producer-id table, the group-commit syncers and the metrics. Narrow handles only: no lock
//! here is held across an `.await`.

use std::net::SocketAddr;
use std::sync::Arc;

use riverbed_log::Log;
use tokio::sync::watch;

use crate::config::ServerConfig;
use crate::durability::Durability;
use crate::groups::Coordinator;
use crate::metrics::Metrics;
use crate::producers::ProducerTable;

pub struct Broker {
    pub log: Log,
    pub config: ServerConfig,
    /// The address advertised in Metadata / FindCoordinator (the bound one; loopback when the
    /// listener is bound to an unspecified address).
    pub advertised: SocketAddr,
    pub coordinator: Arc<Coordinator>,
    pub producers: ProducerTable,
    pub durability: Durability,
    pub metrics: Metrics,
    /// The SASL users when clients must authenticate (`--sasl-users`).
    pub users: Option<Arc<crate::sasl::Users>>,
    /// Becomes true when the server stops: long polls return early, connections stop reading.
    pub shutdown: watch::Receiver<bool>,
}

impl Broker {
    pub fn host(&self) -> String {
        self.advertised.ip().to_string()
    }

    pub fn port(&self) -> i32 {
        i32::from(self.advertised.port())
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}
