//! The ttRPC `ferry.v1.Ferry` service of ferry-agent. Handlers are thin:
//! trace, run the store operation on the blocking pool (it does file I/O and
//! takes a volume lock, neither of which belongs on the async executor),
//! map the error through [`GuestError::to_status`]. Every refusal is logged
//! with the exact message the host receives.
use std::{sync::Arc, time::Instant};

use async_trait::async_trait;
use ferry_proto::{ferry as pb, ferry_ttrpc::Ferry};
use ttrpc::r#async::TtrpcContext;

use crate::{
    error::{GuestError, Result},
    mount::{Mounter, SysMounter},
    store::Store,
};

/// The ferry service over a [`Store`].
#[derive(Clone)]
pub struct Service {
    store: Arc<Store>,
    mounter: Arc<dyn Mounter>,
}

impl Service {
    /// A service answering from `store`, mounting with the real syscalls.
    pub fn new(store: Arc<Store>) -> Service {
        Service::with_mounter(store, Arc::new(SysMounter))
    }

    /// A service that mounts through `mounter` (a recording fake in tests).
    pub fn with_mounter(store: Arc<Store>, mounter: Arc<dyn Mounter>) -> Service {
        Service { store, mounter }
    }

    /// The store behind the service.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Runs `f` on the blocking pool and maps its error for the wire.
    async fn run<T: Send + 'static>(
        &self,
        rpc: &'static str,
        f: impl FnOnce(&Store) -> Result<T> + Send + 'static,
    ) -> ttrpc::Result<T> {
        let store = self.store.clone();
        let r = tokio::task::spawn_blocking(move || f(&store))
            .await
            .unwrap_or_else(|join| Err(GuestError::Server(format!("{rpc} worker failed: {join}"))));
        r.map_err(|e| {
            tracing::warn!(rpc, code = ?e.code(), "refused: {e}");
            e.to_status()
        })
    }
}

#[async_trait]
impl Ferry for Service {
    async fn hello(
        &self,
        _: &TtrpcContext,
        req: pb::HelloRequest,
    ) -> ttrpc::Result<pb::HelloResponse> {
        tracing::info!(
            client = %req.client,
            client_id = req.client_id,
            protocol = req.protocol_version,
            "hello"
        );
        self.run("Hello", move |s| s.hello(&req)).await
    }

    async fn get_manifest(
        &self,
        _: &TtrpcContext,
        req: pb::GetManifestRequest,
    ) -> ttrpc::Result<pb::GetManifestResponse> {
        tracing::debug!(volume = %req.volume, start_after = %req.start_after, "get manifest");
        self.run("GetManifest", move |s| s.get_manifest(&req)).await
    }

    async fn begin(
        &self,
        _: &TtrpcContext,
        req: pb::BeginRequest,
    ) -> ttrpc::Result<pb::BeginResponse> {
        let volume = req.volume.clone();
        let started = Instant::now();
        let r = self.run("Begin", move |s| s.begin(&req)).await?;
        tracing::info!(
            volume = %volume,
            txn = r.txn_id,
            version = %r.version,
            elapsed = ?started.elapsed(),
            "begin"
        );
        Ok(r)
    }

    async fn put_entries(
        &self,
        _: &TtrpcContext,
        req: pb::PutEntriesRequest,
    ) -> ttrpc::Result<pb::PutEntriesResponse> {
        let (txn, removes, upserts) = (req.txn_id, req.removes.len(), req.upserts.len());
        let r = self.run("PutEntries", move |s| s.put_entries(&req)).await?;
        tracing::debug!(
            txn,
            removes,
            upserts,
            pending = r.pending_files,
            "put entries"
        );
        Ok(r)
    }

    async fn write_chunk(
        &self,
        _: &TtrpcContext,
        req: pb::WriteChunkRequest,
    ) -> ttrpc::Result<pb::WriteChunkResponse> {
        self.run("WriteChunk", move |s| s.write_chunk(&req)).await
    }

    async fn commit(
        &self,
        _: &TtrpcContext,
        req: pb::CommitRequest,
    ) -> ttrpc::Result<pb::CommitResponse> {
        let o = self.run("Commit", move |s| s.commit(&req)).await?;
        let v = o.response.volume.as_ref();
        tracing::info!(
            volume = %o.volume,
            txn = o.txn,
            generation = v.map_or(0, |v| v.generation),
            version = v.map_or("", |v| v.version.as_str()),
            removes = o.removes,
            upserts = o.upserts,
            sent_files = o.sent_files,
            reused_files = o.response.reused_files,
            received_bytes = o.received_bytes,
            files = v.map_or(0, |v| v.files),
            bytes = v.map_or(0, |v| v.bytes),
            elapsed = ?o.elapsed,
            "commit"
        );
        Ok(o.response)
    }

    async fn abort(
        &self,
        _: &TtrpcContext,
        req: pb::AbortRequest,
    ) -> ttrpc::Result<pb::AbortResponse> {
        let reason = req.reason.clone();
        let a = self.run("Abort", move |s| s.abort(&req)).await?;
        tracing::info!(
            volume = %a.volume,
            txn = a.txn,
            reason = %reason,
            age = ?a.age,
            "abort"
        );
        Ok(pb::AbortResponse::new())
    }

    async fn remove_volume(
        &self,
        _: &TtrpcContext,
        req: pb::RemoveVolumeRequest,
    ) -> ttrpc::Result<pb::RemoveVolumeResponse> {
        let volume = req.volume.clone();
        let r = self
            .run("RemoveVolume", move |s| s.remove_volume(&req))
            .await?;
        tracing::info!(volume = %volume, existed = r.existed, "remove volume");
        Ok(r)
    }

    async fn status(
        &self,
        _: &TtrpcContext,
        _: pb::StatusRequest,
    ) -> ttrpc::Result<pb::StatusResponse> {
        self.run("Status", |s| Ok(s.status())).await
    }

    async fn mount(
        &self,
        _: &TtrpcContext,
        req: pb::MountRequest,
    ) -> ttrpc::Result<pb::MountResponse> {
        let (volume, path) = (req.volume.clone(), req.path.clone());
        let mounter = self.mounter.clone();
        let r = self
            .run("Mount", move |s| s.mount(&req, mounter.as_ref()))
            .await?;
        tracing::info!(
            volume = %volume,
            path = %path,
            source = %r.source,
            target = %r.target,
            read_only = r.read_only,
            created = r.created,
            "mounted"
        );
        Ok(r)
    }

    async fn read_file(
        &self,
        _: &TtrpcContext,
        req: pb::ReadFileRequest,
    ) -> ttrpc::Result<pb::ReadFileResponse> {
        let (volume, path) = (req.volume.clone(), req.path.clone());
        let r = self.run("ReadFile", move |s| s.read_file(&req)).await?;
        tracing::info!(
            volume = %volume,
            path = %path,
            size = r.size,
            returned = r.data.len(),
            truncated = r.truncated,
            "read file"
        );
        Ok(r)
    }

    async fn verify(
        &self,
        _: &TtrpcContext,
        req: pb::VerifyRequest,
    ) -> ttrpc::Result<pb::VerifyResponse> {
        let r = self.run("Verify", move |s| s.verify(&req)).await?;
        tracing::info!(
            volume = %r.volume.name,
            matches = r.matches,
            disk_version = %r.disk_version,
            problems = ?r.problems,
            "verify"
        );
        Ok(r)
    }

    /// Powers the VM off (or reboots it) after replying, when this agent is
    /// a VM's init or the agent ferry's init started; any other agent (on a
    /// node, in a test) refuses with FAILED_PRECONDITION, because a host must
    /// never be able to turn off the machine an ordinary agent runs on.
    async fn power_off(
        &self,
        _: &TtrpcContext,
        req: pb::PowerOffRequest,
    ) -> ttrpc::Result<pb::PowerOffResponse> {
        let Some(ctl) = crate::init::power_control() else {
            let msg = "this ferry-agent is not a VM's init (PID 1, or the agent ferry's PID 1 started): refusing to power off";
            tracing::warn!(rpc = "PowerOff", "refused: {msg}");
            return Err(ferry_proto::wire::status(
                ttrpc::Code::FAILED_PRECONDITION,
                msg,
            ));
        };
        tracing::warn!(reboot = req.reboot, "the host asked to power off the VM");
        crate::init::schedule_power_off(ctl, req.reboot);
        Ok(pb::PowerOffResponse::new())
    }
}
