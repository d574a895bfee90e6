//! `ferry status`: what the agent holds, as a table or as JSON.
use std::time::{Duration, SystemTime};

use ferry_proto::ferry as pb;
use ferry_tree::manifest::hex;
use serde_json::json;

use crate::human_bytes;

/// The status as JSON (stable field names, digests in hex).
pub fn to_json(s: &pb::StatusResponse) -> serde_json::Value {
    let limits = s.limits.as_ref().cloned().unwrap_or_default();
    json!({
        "agent": s.agent,
        "protocol_version": s.protocol_version,
        "root": s.root,
        "uptime_ms": s.uptime_ms,
        "store_bytes": s.store_bytes,
        "store_files": s.store_files,
        "open_transactions": s.open_transactions,
        "limits": {
            "max_volume_bytes": limits.max_volume_bytes,
            "max_volume_files": limits.max_volume_files,
            "max_store_bytes": limits.max_store_bytes,
            "max_store_files": limits.max_store_files,
            "max_path_len": limits.max_path_len,
            "max_depth": limits.max_depth,
            "max_volumes": limits.max_volumes,
        },
        "volumes": s.volumes.iter().map(|v| json!({
            "name": v.name,
            "kind": ferry_proto::convert::volume_kind_from_pb(v.kind)
                .map_or_else(|| format!("unknown {}", v.kind.value()), |k| k.to_string()),
            "generation": v.generation,
            "version": v.version,
            "digest": hex(&v.digest),
            "files": v.files,
            "bytes": v.bytes,
            "entries": v.entries,
            "last_commit_unix_ms": v.last_commit_unix_ms,
        })).collect::<Vec<_>>(),
    })
}

fn ago(unix_ms: i64) -> String {
    if unix_ms <= 0 {
        return "never".into();
    }
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64;
    let d = Duration::from_millis((now - unix_ms).max(0) as u64);
    if d.as_secs() < 120 {
        format!("{:.1}s ago", d.as_secs_f64())
    } else if d.as_secs() < 7200 {
        format!("{}m ago", d.as_secs() / 60)
    } else {
        format!("{}h ago", d.as_secs() / 3600)
    }
}

/// The status as a table a person reads.
pub fn to_table(s: &pb::StatusResponse) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let l = s.limits.as_ref().cloned().unwrap_or_default();
    let _ = writeln!(
        out,
        "{} (protocol {}), root {}, up {:.0}s, {} open transaction(s)",
        s.agent,
        s.protocol_version,
        s.root,
        s.uptime_ms as f64 / 1e3,
        s.open_transactions
    );
    let _ = writeln!(
        out,
        "store: {} volume(s), {} file(s), {} of {} ({} files max)",
        s.volumes.len(),
        s.store_files,
        human_bytes(s.store_bytes),
        human_bytes(l.max_store_bytes),
        l.max_store_files
    );
    if s.volumes.is_empty() {
        return out;
    }
    let w = s
        .volumes
        .iter()
        .map(|v| v.name.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let _ = writeln!(
        out,
        "\n{:w$}  {:>4}  {:<24}  {:>6}  {:>10}  {:>12}  DIGEST",
        "VOLUME", "GEN", "VERSION", "FILES", "BYTES", "LAST COMMIT"
    );
    for v in &s.volumes {
        let _ = writeln!(
            out,
            "{:w$}  {:>4}  {:<24}  {:>6}  {:>10}  {:>12}  {}",
            v.name,
            v.generation,
            v.version,
            v.files,
            human_bytes(v.bytes),
            ago(v.last_commit_unix_ms),
            &hex(&v.digest)[..16.min(v.digest.len() * 2)]
        );
    }
    out
}
