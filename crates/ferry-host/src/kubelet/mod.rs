//! A kubelet stand-in for the demo and the tests: volumes written by
//! kubelet's AtomicWriter algorithm to the letter ([`atomic_writer`]), the
//! payloads kubelet builds from Secret, ConfigMap, downward API and
//! projected sources, with the Service Account token rotation of a
//! `kube-api-access-*` volume ([`volumes`]), and a pod's directory on the
//! node with its etc-hosts and termination-log files ([`pod`]).
pub mod atomic_writer;
pub mod pod;
pub mod volumes;

pub use atomic_writer::{AtomicWriter, FileProjection, Ownership, Payload, payload, timestamp};
pub use pod::{Pod, etc_hosts};
pub use volumes::{
    DEFAULT_MODE, DownwardItem, KeyToPath, KeyedData, Projection, ServiceAccount, downward_payload,
    key_payload, keyed, projected_payload,
};
