//! A unix socket proxy that counts every byte in each direction. The demo
//! and the tests put it between `ferry sync` and the agent to measure what
//! really crosses the wire, framing included.
use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use ferry_proto::transport::{Counted, WireCounters};
use tokio::net::{UnixListener, UnixStream};

/// A running proxy; stops when dropped.
pub struct CountingProxy {
    /// Bytes from clients to the upstream (`sent`) and back (`received`),
    /// over all connections.
    pub counters: Arc<WireCounters>,
    pub path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl CountingProxy {
    /// Listens on `listen` and forwards each connection to `upstream`.
    pub fn start(listen: &Path, upstream: &Path) -> std::io::Result<Self> {
        let l = UnixListener::bind(listen)?;
        let counters = Arc::new(WireCounters::default());
        let c = counters.clone();
        let upstream = upstream.to_path_buf();
        let task = tokio::spawn(async move {
            while let Ok((down, _)) = l.accept().await {
                let c = c.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(up) = UnixStream::connect(&upstream).await else {
                        return;
                    };
                    // Counted on the upstream side: what it writes is what the
                    // client sent.
                    let mut up = Counted::new(up, c);
                    let mut down = down;
                    let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                });
            }
        });
        Ok(Self {
            counters,
            path: listen.to_path_buf(),
            task,
        })
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
