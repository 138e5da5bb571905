//! `riverbed._core`: thin pyo3 wrappers over the pure Rust crates. Conversions and delegation
//! only; the logic lives in `riverbed-log`.

use pyo3::prelude::*;

/// mimalloc keeps freed memory for reuse: the engine allocates and frees large per-step buffers,
/// which with the system allocator come back as fresh pages (page faults) every step.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod consumer;
mod error;
mod kafka;
mod log;
mod server;
mod sink;
mod source;
mod stream;
mod timeout;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    error::register(m)?;
    m.add_class::<log::PyLog>()?;
    m.add_class::<log::PyTopic>()?;
    m.add_class::<consumer::PyConsumer>()?;
    m.add_class::<source::PySource>()?;
    m.add_class::<sink::PySink>()?;
    m.add_class::<stream::PyPipeline>()?;
    m.add_class::<stream::PyRunHandle>()?;
    m.add_class::<kafka::PyKafka>()?;
    m.add_class::<kafka::PyKafkaConsumer>()?;
    m.add_class::<kafka::PyMockKafka>()?;
    m.add_class::<server::PyServer>()?;
    m.add_function(wrap_pyfunction!(log::murmur2, m)?)?;
    m.add_function(wrap_pyfunction!(timeout::timeout_seconds, m)?)?;
    Ok(())
}
