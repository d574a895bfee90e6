//! Connecting and listening on every [`Address`] kind, over one code path:
//! each connection is a tokio byte stream wrapped in [`Counted`] and handed to
//! ttRPC as a custom `Socket`, so unix, vsock and hybrid vsock behave alike
//! and every byte that crosses the wire is counted.
use std::{
    io,
    path::Path,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use futures::StreamExt;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::{UnixListener, UnixStream},
};
use ttrpc::asynchronous::transport::{Listener, Socket};

use crate::addr::Address;

/// Errors of connecting or listening.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("connect {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("connect {addr}: timed out after {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error(
        "hybrid vsock {addr}: the other side answered {answer:?} to CONNECT (is anything listening on that guest port?)"
    )]
    HandshakeRefused { addr: String, answer: String },
    #[error("listen on {addr}: {source}")]
    Listen { addr: String, source: io::Error },
    #[error("{addr}: {why}")]
    Unsupported { addr: String, why: &'static str },
}

/// Bytes moved over one connection, shared between the stream and its owner,
/// and whether the peer has gone away (EOF or a read error), so the owner
/// learns of a dead connection without polling it.
#[derive(Debug, Default)]
pub struct WireCounters {
    sent: AtomicU64,
    received: AtomicU64,
    closed: std::sync::atomic::AtomicBool,
    closed_notify: tokio::sync::Notify,
}

impl WireCounters {
    /// True once the stream saw EOF or a read error.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
    /// Resolves once the stream saw EOF or a read error.
    pub async fn closed(&self) {
        loop {
            let notified = self.closed_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
    }
    fn mark_closed(&self) {
        self.closed.store(true, Ordering::Release);
        self.closed_notify.notify_waiters();
    }
    /// Bytes written to the peer so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
    /// Bytes read from the peer so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

/// A byte stream that counts what passes through it.
pub struct Counted<S> {
    inner: S,
    counters: Arc<WireCounters>,
}

impl<S> Counted<S> {
    /// Wraps `inner`, adding to `counters`.
    pub fn new(inner: S, counters: Arc<WireCounters>) -> Self {
        Self { inner, counters }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let want = buf.remaining();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.counters
            .received
            .fetch_add(n as u64, Ordering::Relaxed);
        match &res {
            Poll::Ready(Ok(())) if n == 0 && want > 0 => self.counters.mark_closed(),
            Poll::Ready(Err(_)) => self.counters.mark_closed(),
            _ => {}
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &res {
            self.counters.sent.fetch_add(*n as u64, Ordering::Relaxed);
        }
        res
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Connects to `addr` within `timeout` and returns a ttRPC socket whose bytes
/// are counted in `counters`.
pub async fn connect(
    addr: &Address,
    timeout: Duration,
    counters: Arc<WireCounters>,
) -> Result<Socket, TransportError> {
    let name = addr.to_string();
    let fut = connect_inner(addr, counters);
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(TransportError::Timeout {
            addr: name,
            timeout,
        }),
    }
}

async fn connect_inner(
    addr: &Address,
    counters: Arc<WireCounters>,
) -> Result<Socket, TransportError> {
    let name = addr.to_string();
    let err = |source| TransportError::Connect {
        addr: name.clone(),
        source,
    };
    match addr {
        Address::Unix(path) => {
            let s = UnixStream::connect(path).await.map_err(err)?;
            Ok(Socket::new(Counted::new(s, counters)))
        }
        Address::Vsock { cid, port } => {
            let s = tokio_vsock::VsockStream::connect(tokio_vsock::VsockAddr::new(*cid, *port))
                .await
                .map_err(err)?;
            Ok(Socket::new(Counted::new(s, counters)))
        }
        Address::HybridVsock { uds, port } => {
            let mut s = UnixStream::connect(uds).await.map_err(err)?;
            hybrid_vsock_handshake(&mut s, *port, &name).await?;
            Ok(Socket::new(Counted::new(s, counters)))
        }
        Address::Tcp(_) => Err(TransportError::Unsupported {
            addr: name,
            why: "tcp:// needs an encrypted channel, which this build does not provide yet; use unix://, vsock:// or hvsock://",
        }),
    }
}

/// The hybrid-vsock handshake of Firecracker, Cloud Hypervisor and
/// vhost-device-vsock: send `CONNECT <port>\n`, expect `OK <n>\n`. The answer
/// is read byte by byte so nothing after the newline is consumed.
async fn hybrid_vsock_handshake(
    s: &mut UnixStream,
    port: u32,
    name: &str,
) -> Result<(), TransportError> {
    let err = |source| TransportError::Connect {
        addr: name.to_string(),
        source,
    };
    s.write_all(format!("CONNECT {port}\n").as_bytes())
        .await
        .map_err(err)?;
    let mut line = Vec::with_capacity(32);
    loop {
        let mut b = [0u8; 1];
        let n = s.read(&mut b).await.map_err(err)?;
        if n == 0 || b[0] == b'\n' || line.len() >= 64 {
            break;
        }
        line.push(b[0]);
    }
    let answer = String::from_utf8_lossy(&line).into_owned();
    if answer.starts_with("OK ") || answer == "OK" {
        Ok(())
    } else {
        Err(TransportError::HandshakeRefused {
            addr: name.to_string(),
            answer,
        })
    }
}

/// A connection holding one of the listener's connection slots until it is
/// dropped.
struct Slotted<S> {
    inner: S,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl<S: AsyncRead + Unpin> AsyncRead for Slotted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Slotted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Something that accepts byte streams.
trait Accept: Send + Sync + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static;
    fn accept(&self) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

impl Accept for UnixListener {
    type Stream = UnixStream;
    async fn accept(&self) -> io::Result<UnixStream> {
        UnixListener::accept(self).await.map(|(s, _)| s)
    }
}

impl Accept for tokio_vsock::VsockListener {
    type Stream = tokio_vsock::VsockStream;
    async fn accept(&self) -> io::Result<tokio_vsock::VsockStream> {
        tokio_vsock::VsockListener::accept(self)
            .await
            .map(|(s, _)| s)
    }
}

/// The accept loop as a stream for ttRPC: a connection is accepted only
/// while one of `max_conns` slots is free, so a misbehaving peer cannot
/// exhaust the agent's file descriptors or memory; the slot is freed when
/// ttRPC drops the connection.
fn slotted<L: Accept>(l: L, max_conns: usize) -> Listener {
    let slots = Arc::new(tokio::sync::Semaphore::new(max_conns.max(1)));
    let stream = futures::stream::unfold((l, slots), |(l, slots)| async move {
        let slot = slots.clone().acquire_owned().await.expect("never closed");
        let r = l.accept().await.map(|inner| Slotted { inner, _slot: slot });
        Some((r, (l, slots)))
    });
    Listener::new(stream.boxed())
}

/// Binds a listener for the agent that serves at most `max_conns`
/// connections at once. A unix socket path left behind by a dead agent is
/// replaced; a live one is refused, so two agents never share a socket.
pub async fn listen(addr: &Address, max_conns: usize) -> Result<Listener, TransportError> {
    let name = addr.to_string();
    let err = |source| TransportError::Listen {
        addr: name.clone(),
        source,
    };
    match addr {
        Address::Unix(path) => {
            remove_stale_socket(path).await.map_err(err)?;
            Ok(slotted(UnixListener::bind(path).map_err(err)?, max_conns))
        }
        Address::Vsock { cid, port } => {
            let l = tokio_vsock::VsockListener::bind(tokio_vsock::VsockAddr::new(*cid, *port))
                .map_err(err)?;
            Ok(slotted(l, max_conns))
        }
        Address::HybridVsock { .. } => Err(TransportError::Unsupported {
            addr: name,
            why: "hvsock:// is a host-side address; inside the guest listen on vsock://-1:PORT",
        }),
        Address::Tcp(_) => Err(TransportError::Unsupported {
            addr: name,
            why: "tcp:// needs an encrypted channel, which this build does not provide yet",
        }),
    }
}

async fn remove_stale_socket(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match tokio::fs::symlink_metadata(path).await {
        Ok(m) if m.file_type().is_socket() => {
            if UnixStream::connect(path).await.is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another process is listening on this socket",
                ));
            }
            tokio::fs::remove_file(path).await
        }
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "path exists and is not a socket",
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hybrid_vsock_handshake_accepts_ok_and_refuses_anything_else() {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("hv.sock");
        let l = UnixListener::bind(&uds).unwrap();
        let server = tokio::spawn(async move {
            for reply in ["OK 1073741824\n", "NO\n"] {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = [0u8; 13];
                s.read_exact(&mut buf).await.unwrap();
                assert_eq!(&buf, b"CONNECT 1025\n");
                s.write_all(reply.as_bytes()).await.unwrap();
                s.write_all(b"payload").await.unwrap();
                let mut rest = [0u8; 2];
                let _ = s.read(&mut rest).await;
            }
        });
        let addr = Address::HybridVsock {
            uds: uds.clone(),
            port: 1025,
        };
        let mut s = UnixStream::connect(&uds).await.unwrap();
        hybrid_vsock_handshake(&mut s, 1025, "t").await.unwrap();
        let mut p = [0u8; 7];
        s.read_exact(&mut p).await.unwrap();
        assert_eq!(
            &p, b"payload",
            "the handshake must not consume stream bytes"
        );
        drop(s);
        let e = connect(&addr, Duration::from_secs(5), Default::default())
            .await
            .err()
            .expect("NO must be refused");
        assert!(matches!(e, TransportError::HandshakeRefused { .. }), "{e}");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_listener_holds_no_more_than_its_connection_slots() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cap.sock");
        let mut l = listen(&Address::Unix(p.clone()), 2).await.unwrap();
        let _c1 = UnixStream::connect(&p).await.unwrap();
        let _c2 = UnixStream::connect(&p).await.unwrap();
        let _c3 = UnixStream::connect(&p).await.unwrap();
        let s1 = l.next().await.unwrap().unwrap();
        let _s2 = l.next().await.unwrap().unwrap();
        let third = tokio::time::timeout(Duration::from_millis(200), l.next()).await;
        assert!(
            third.is_err(),
            "a third connection was accepted with two slots"
        );
        drop(s1);
        let third = tokio::time::timeout(Duration::from_secs(5), l.next()).await;
        assert!(
            matches!(third, Ok(Some(Ok(_)))),
            "a freed slot must admit the next connection"
        );
    }

    #[tokio::test]
    async fn refuses_to_replace_a_live_socket_or_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.sock");
        let _live = listen(&Address::Unix(p.clone()), 4).await.unwrap();
        assert!(listen(&Address::Unix(p.clone()), 4).await.is_err());
        let f = dir.path().join("file");
        std::fs::write(&f, b"x").unwrap();
        assert!(listen(&Address::Unix(f), 4).await.is_err());
    }
}
