//! The one place where a timeout from Python (seconds) is checked and becomes a `Duration`.
//! Every binding taking one goes through [`seconds`]; the facade's `_units.timeout_s` calls
//! [`timeout_seconds`], so Python and Rust agree and no value can reach `Duration::from_secs_f64`
//! (which panics on NaN, negative and huge values).

use std::time::{Duration, Instant};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// The longest finite timeout, about 31.7 years: longer is a mistake, or meant `inf`.
pub const MAX_SECONDS: f64 = 1e9;

/// `secs` as a `Duration`; `None` means no limit (from `None` or `inf`) where `no_limit` allows
/// it. NaN, negative, (else) infinite and longer than [`MAX_SECONDS`]: `ValueError` naming `arg`.
pub fn seconds(arg: &str, secs: Option<f64>, no_limit: bool) -> PyResult<Option<Duration>> {
    let refuse = |why: String| Err(PyValueError::new_err(format!("{arg}: {why}")));
    let Some(s) = secs else {
        return if no_limit {
            Ok(None)
        } else {
            refuse("must be a number of seconds, got None".into())
        };
    };
    if s.is_nan() {
        return refuse("must be a number of seconds, got nan".into());
    }
    if s < 0.0 {
        return refuse(format!("must not be negative, got {s}"));
    }
    if s.is_infinite() {
        return if no_limit {
            Ok(None)
        } else {
            refuse("must be finite, got inf".into())
        };
    }
    if s > MAX_SECONDS {
        let hint = if no_limit {
            "; pass float('inf') for no limit"
        } else {
            ""
        };
        return refuse(format!(
            "{s:e} seconds is too long (at most {MAX_SECONDS:e}, about 31 years){hint}"
        ));
    }
    Ok(Some(Duration::from_secs_f64(s)))
}

/// When a wait of `timeout` started now ends (`None`: never).
pub fn deadline(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

/// What is left of a wait until `deadline`, at most `slice` (to check for Ctrl-C between).
pub fn left(deadline: Option<Instant>, slice: Duration) -> Duration {
    deadline.map_or(slice, |d| {
        d.saturating_duration_since(Instant::now()).min(slice)
    })
}

/// Whether the wait until `deadline` is over.
pub fn passed(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

/// `_core.timeout_seconds(arg, value, no_limit)`: the facade's check of a timeout: the seconds,
/// or `None` for no limit.
#[pyfunction]
#[pyo3(signature = (arg, value, no_limit=true))]
pub fn timeout_seconds(arg: &str, value: Option<f64>, no_limit: bool) -> PyResult<Option<f64>> {
    Ok(seconds(arg, value, no_limit)?.map(|d| d.as_secs_f64()))
}
