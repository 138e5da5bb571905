//! One client connection: 4-byte length-prefixed frames in, responses out in request order.
//!
//! The reader decodes each request and runs the part that must happen in order (a produce's
//! append) before it reads the next one; what may wait (a produce's fsync, a fetch's long poll,
//! a group rebalance) is a future the writer awaits in order, so several requests of one
//! connection are in flight (at most `MAX_IN_FLIGHT`) while responses keep their order.
//! A frame with a negative or oversized length closes the connection before its body is read;
//! a body is read as it arrives (no allocation of the claimed size up front). Generic over the
//! stream so a TLS stream plugs in.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::broker::Broker;
use crate::dispatch::{self, Pending};

/// Requests of one connection decoded but not yet answered.
const MAX_IN_FLIGHT: usize = 16;
/// Request bytes of one connection held while their requests are in flight, in KiB units of a
/// semaphore: at most `socket.request.max.bytes` (and one more frame being read).
const KIB: usize = 1024;
/// Body bytes buffered per read step.
const READ_STEP: usize = 64 * 1024;

/// Why a connection is closed by the broker.
#[derive(Debug, thiserror::Error)]
pub enum CloseReason {
    #[error("frame length {0} is negative")]
    NegativeLength(i32),
    #[error("frame of {len} bytes exceeds socket.request.max.bytes ({max})")]
    TooLarge { len: usize, max: usize },
    #[error("connection closed inside a frame ({got} of {want} bytes)")]
    Truncated { got: usize, want: usize },
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

struct OpenGuard(Arc<Broker>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0
            .metrics
            .connections_open
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Read one frame. `Ok(None)` is a clean end of stream between frames.
async fn read_frame<R: AsyncRead + Unpin>(
    rd: &mut R,
    max: usize,
) -> Result<Option<Bytes>, CloseReason> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = rd.read(&mut len[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(CloseReason::Truncated { got, want: 4 })
            };
        }
        got += n;
    }
    let n = i32::from_be_bytes(len);
    if n < 0 {
        return Err(CloseReason::NegativeLength(n));
    }
    let want = n as usize;
    if want > max {
        return Err(CloseReason::TooLarge { len: want, max });
    }
    let mut buf = BytesMut::with_capacity(want.min(READ_STEP));
    while buf.len() < want {
        if buf.capacity() == buf.len() {
            buf.reserve((want - buf.len()).min(buf.len().max(READ_STEP)));
        }
        let left = (want - buf.len()) as u64;
        let n = (&mut *rd).take(left).read_buf(&mut buf).await?;
        if n == 0 {
            return Err(CloseReason::Truncated {
                got: buf.len(),
                want,
            });
        }
    }
    Ok(Some(buf.freeze()))
}

/// Serve one connection until the client closes it, it sends something malformed, or the
/// server stops (then requests already read are answered first).
pub async fn serve<S>(stream: S, peer: SocketAddr, broker: Arc<Broker>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    broker
        .metrics
        .connections_open
        .fetch_add(1, Ordering::Relaxed);
    broker
        .metrics
        .connections_total
        .fetch_add(1, Ordering::Relaxed);
    let _open = OpenGuard(broker.clone());
    let (mut rd, wr) = tokio::io::split(stream);
    let (tx, rx) = mpsc::channel::<(Pending, OwnedSemaphorePermit)>(MAX_IN_FLIGHT);
    let budget_kib = (broker.config.request_max_bytes / KIB).max(1);
    let budget = Arc::new(Semaphore::new(budget_kib));
    let writer = tokio::spawn(write_responses(wr, rx, broker.clone(), peer));
    let mut shutdown = broker.shutdown.clone();
    let max = broker.config.request_max_bytes;
    let peer_host = peer.ip().to_string();
    let mut sasl = broker.users.clone().map(crate::sasl::SaslSession::new);
    loop {
        if *shutdown.borrow() {
            break;
        }
        let frame = tokio::select! {
            f = read_frame(&mut rd, max) => f,
            _ = shutdown.changed() => break,
        };
        let frame = match frame {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(CloseReason::Io(_)) => break,
            Err(reason) => {
                broker
                    .metrics
                    .connections_rejected
                    .fetch_add(1, Ordering::Relaxed);
                eprintln!("riverbed serve: closing connection from {peer}: {reason}");
                break;
            }
        };
        broker
            .metrics
            .bytes_in
            .fetch_add(frame.len() as u64 + 4, Ordering::Relaxed);
        // Held until the response is written: bounds what in-flight requests keep in memory.
        let kib = (frame.len() / KIB).clamp(1, budget_kib) as u32;
        let Ok(permit) = budget.clone().acquire_many_owned(kib).await else {
            break;
        };
        if let Some(session) = sasl.as_mut().filter(|s| !s.is_authenticated()) {
            use crate::sasl_gate::Gate;
            match crate::sasl_gate::step(session, &broker, &frame, &peer_host) {
                Gate::Pass => {}
                Gate::Reply { pending, close } => {
                    if tx.send((pending, permit)).await.is_err() || close {
                        break;
                    }
                    continue;
                }
                Gate::Close(reason) => {
                    broker
                        .metrics
                        .connections_rejected
                        .fetch_add(1, Ordering::Relaxed);
                    eprintln!("riverbed serve: closing connection from {peer}: {reason}");
                    break;
                }
            }
        }
        match dispatch::handle(&broker, frame, &peer_host) {
            Ok(pending) => {
                if tx.send((pending, permit)).await.is_err() {
                    break; // the writer failed: the connection is gone
                }
            }
            Err(reason) => {
                broker
                    .metrics
                    .connections_rejected
                    .fetch_add(1, Ordering::Relaxed);
                eprintln!("riverbed serve: closing connection from {peer}: {reason}");
                break;
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}

async fn write_responses<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::Receiver<(Pending, OwnedSemaphorePermit)>,
    broker: Arc<Broker>,
    peer: SocketAddr,
) {
    while let Some((p, _permit)) = rx.recv().await {
        let Some(frame) = p.finish().await else {
            continue; // acks=0: no response
        };
        match frame {
            Ok(bytes) => {
                broker
                    .metrics
                    .bytes_out
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                if wr.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Err(why) => {
                eprintln!("riverbed serve: closing connection from {peer}: {why}");
                return;
            }
        }
    }
    let _ = wr.flush().await;
    let _ = wr.shutdown().await;
}
