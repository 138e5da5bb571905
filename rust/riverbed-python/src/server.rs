//! `Server`: the log served over the Kafka protocol (`riverbed_server::Server`), started on
//! background threads while the same process keeps using the `Log`.

use std::net::ToSocketAddrs;
use std::path::PathBuf;

use parking_lot::Mutex;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::error::ServerError;
use crate::log::PyLog;

#[pyclass(module = "riverbed._core", name = "Server", frozen)]
pub struct PyServer {
    inner: Mutex<Option<riverbed_server::Server>>,
    log: riverbed_log::Log,
    bootstrap: String,
}

fn addr(text: &str, what: &str) -> PyResult<std::net::SocketAddr> {
    let mut addrs = text
        .to_socket_addrs()
        .map_err(|e| PyValueError::new_err(format!("{what}: {text:?} is not HOST:PORT ({e})")))?;
    addrs
        .next()
        .ok_or_else(|| PyValueError::new_err(format!("{what}: {text:?} resolves to no address")))
}

#[pymethods]
impl PyServer {
    #[new]
    #[pyo3(signature = (log, listen, settings, sasl_users=None, tls_cert=None, tls_key=None, allow_anonymous=false, metrics_listen=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        log: &PyLog,
        listen: &str,
        settings: Vec<(String, String)>,
        sasl_users: Option<PathBuf>,
        tls_cert: Option<PathBuf>,
        tls_key: Option<PathBuf>,
        allow_anonymous: bool,
        metrics_listen: Option<&str>,
    ) -> PyResult<Self> {
        let mut config = riverbed_server::ServerConfig {
            listen: addr(listen, "listen")?,
            sasl_users,
            tls_cert,
            tls_key,
            allow_anonymous,
            metrics_listen: metrics_listen
                .map(|m| addr(m, "metrics_listen"))
                .transpose()?,
            ..Default::default()
        };
        for (k, v) in &settings {
            riverbed_server::settings::apply(&mut config, k, v).map_err(PyValueError::new_err)?;
        }
        let log = log.inner.clone();
        if let Some(at) = log.served_at() {
            return Err(ServerError::new_err(format!(
                "this log is already served at {at}: one server per log (stop that one first)"
            )));
        }
        let server = py
            .detach(|| riverbed_server::Server::start(log.clone(), config))
            .map_err(|e| ServerError::new_err(format!("{e:#}")))?;
        let bootstrap = server.bootstrap().to_string();
        if let Err(e) = log.advertise_served_at(Some(&bootstrap)) {
            let _ = py.detach(|| server.stop());
            return Err(crate::error::to_py(e));
        }
        Ok(PyServer {
            inner: Mutex::new(Some(server)),
            log,
            bootstrap,
        })
    }

    /// `HOST:PORT` for a Kafka client's `bootstrap.servers`.
    #[getter]
    fn bootstrap(&self) -> String {
        self.bootstrap.clone()
    }

    #[getter]
    fn running(&self) -> bool {
        self.inner.lock().is_some()
    }

    /// Stop accepting, finish requests in flight, flush the log. Idempotent.
    fn stop(&self, py: Python<'_>) -> PyResult<()> {
        let Some(server) = self.inner.lock().take() else {
            return Ok(());
        };
        let stopped = py.detach(|| server.stop());
        if !self.log.is_closed() {
            let _ = self.log.advertise_served_at(None);
        }
        stopped.map_err(|e| ServerError::new_err(format!("{e:#}")))
    }

    /// Prometheus text exposition of the broker's metrics ("" once stopped).
    fn metrics(&self) -> String {
        self.inner
            .lock()
            .as_ref()
            .map(|s| s.metrics())
            .unwrap_or_default()
    }
}
