//! A connected ferry-agent: the handshake, paged manifest reads and status,
//! over any transport, with the connection's byte counters at hand.
use std::{sync::Arc, time::Duration};

use ferry_proto::{
    Address, PROTOCOL_VERSION,
    convert::entry_from_pb,
    ferry as pb,
    ferry_ttrpc::FerryClient,
    transport::{self, WireCounters},
};
use ferry_tree::Manifest;

use crate::error::{HostError, Result};

/// One connection to a ferry-agent.
pub struct AgentClient {
    rpc: FerryClient,
    counters: Arc<WireCounters>,
    /// What the agent said in the handshake: its limits and volumes.
    pub hello: pb::HelloResponse,
    /// Identifies this host process to the agent across reconnects, so the
    /// agent can drop a transaction a dropped connection left open.
    pub client_id: u64,
    timeout: Duration,
}

impl AgentClient {
    /// Connects to `addr` and shakes hands. `timeout` bounds the connect and
    /// every call made later.
    pub async fn connect(
        addr: &Address,
        client: &str,
        client_id: u64,
        timeout: Duration,
    ) -> Result<Self> {
        let counters = Arc::new(WireCounters::default());
        let socket = transport::connect(addr, timeout, counters.clone()).await?;
        let rpc = FerryClient::new(ttrpc::asynchronous::Client::new(socket));
        let mut req = pb::HelloRequest::new();
        req.protocol_version = PROTOCOL_VERSION;
        req.client = client.to_string();
        req.client_id = client_id;
        let hello = rpc
            .hello(ctx(timeout), &req)
            .await
            .map_err(|e| HostError::rpc(format!("hello to {addr}"), e))?;
        if hello.protocol_version != PROTOCOL_VERSION {
            return Err(HostError::ProtocolMismatch {
                agent: hello.protocol_version,
                ours: PROTOCOL_VERSION,
            });
        }
        Ok(Self {
            rpc,
            counters,
            hello,
            client_id,
            timeout,
        })
    }

    /// The generated client, for the transaction calls.
    pub fn rpc(&self) -> &FerryClient {
        &self.rpc
    }

    /// A call context with this client's timeout.
    pub fn ctx(&self) -> ttrpc::context::Context {
        ctx(self.timeout)
    }

    /// Bytes sent and received on this connection, and whether it closed.
    pub fn counters(&self) -> &Arc<WireCounters> {
        &self.counters
    }

    /// The agent's summary of `volume` from the handshake, if it had one.
    pub fn summary(&self, volume: &str) -> Option<&pb::VolumeSummary> {
        self.hello.volumes.iter().find(|v| v.name == volume)
    }

    /// The guest's committed manifest of `volume`, all pages.
    pub async fn manifest(&self, volume: &str) -> Result<(pb::VolumeSummary, Manifest)> {
        let mut m = Manifest::new();
        let mut req = pb::GetManifestRequest::new();
        req.volume = volume.to_string();
        loop {
            let resp = self
                .rpc
                .get_manifest(self.ctx(), &req)
                .await
                .map_err(|e| HostError::rpc(format!("get manifest of {volume}"), e))?;
            for e in &resp.entries {
                let e = entry_from_pb(e).map_err(|e| {
                    HostError::Protocol(format!("agent sent a malformed manifest of {volume}: {e}"))
                })?;
                m.insert(e);
            }
            let last = resp.entries.last().map(|e| e.path.clone());
            if !resp.more {
                let summary = resp.volume.into_option().unwrap_or_default();
                if summary.digest.as_slice() != m.digest().as_slice() {
                    return Err(HostError::Protocol(format!(
                        "agent's manifest of {volume} does not match its own digest"
                    )));
                }
                return Ok((summary, m));
            }
            match last {
                Some(p) => req.start_after = p,
                None => {
                    return Err(HostError::Protocol(format!(
                        "agent said more entries follow for {volume} but sent none"
                    )));
                }
            }
        }
    }

    /// Asks the agent to re-read `volume` from its disk and compare it with
    /// what it committed.
    pub async fn verify(&self, volume: &str) -> Result<pb::VerifyResponse> {
        let mut req = pb::VerifyRequest::new();
        req.volume = volume.to_string();
        self.rpc
            .verify(self.ctx(), &req)
            .await
            .map_err(|e| HostError::rpc(format!("verify of {volume}"), e))
    }

    /// The first `max_bytes` of one file of a volume in the guest (a file
    /// volume: `path` empty), with its full size.
    pub async fn read_file(
        &self,
        volume: &str,
        path: &str,
        max_bytes: u64,
        tail: bool,
    ) -> Result<pb::ReadFileResponse> {
        let mut req = pb::ReadFileRequest::new();
        req.volume = volume.to_string();
        req.path = path.to_string();
        req.max_bytes = max_bytes;
        req.tail = tail;
        self.rpc
            .read_file(self.ctx(), &req)
            .await
            .map_err(|e| HostError::rpc(format!("read file of {volume}"), e))
    }

    /// The agent's status.
    pub async fn status(&self) -> Result<pb::StatusResponse> {
        self.rpc
            .status(self.ctx(), &pb::StatusRequest::new())
            .await
            .map_err(|e| HostError::rpc("status", e))
    }
}

fn ctx(timeout: Duration) -> ttrpc::context::Context {
    ttrpc::context::with_timeout(timeout.as_nanos().min(i64::MAX as u128) as i64)
}

/// A client id unlikely to repeat across host processes.
pub fn new_client_id() -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(&std::process::id().to_le_bytes());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    h.update(&now.as_nanos().to_le_bytes());
    let b = h.finalize();
    u64::from_le_bytes(b.as_bytes()[..8].try_into().expect("8 bytes")) | 1
}
