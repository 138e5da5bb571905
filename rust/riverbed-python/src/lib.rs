//! `riverbed._core`: thin pyo3 wrappers over the pure Rust crates. Conversions and delegation
//! only; the logic lives in `riverbed-log`.

use pyo3::prelude::*;

/// mimalloc keeps freed memory for reuse: the engine allocates and frees large per-step buffers,
/// which with the system allocator come back as fresh pages (page faults) every step.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (the same index in its v2 and v3 headers).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Freed memory goes back to the OS after a second unused rather than mimalloc's default 10 ms:
/// the workers of a parallel run free what other workers allocated (exchanged batches), and
/// with the default those pages were returned and faulted in again every step (a fifth of a
/// worker's time in `benchmarks/window_throughput.py`). `MIMALLOC_PURGE_DELAY` in the
/// environment (milliseconds; -1: never) overrides it.
fn keep_freed_memory_a_while() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: mimalloc's options are plain atomics, settable from any thread at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 1000) }
}

mod consumer;
mod error;
mod kafka;
mod log;
mod server;
mod stream;
mod timeout;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    keep_freed_memory_a_while();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    error::register(m)?;
    m.add_class::<log::PyLog>()?;
    m.add_class::<log::PyTopic>()?;
    m.add_class::<consumer::PyConsumer>()?;
    m.add_class::<stream::PySource>()?;
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
