//! The future a request handler returns: the part of its work that runs after the in-order
//! part, awaited in order by the connection's writer.

use std::future::Future;
use std::pin::Pin;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
