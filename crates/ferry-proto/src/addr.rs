//! Transport addresses, spelled as Kata spells them:
//!
//! - `unix:///run/ferry.sock`
//! - `vsock://CID:PORT` (a listener uses `vsock://-1:PORT` for any CID)
//! - `hvsock:///path/to/uds:PORT` (hybrid vsock: Firecracker, Cloud
//!   Hypervisor, vhost-user-vsock; the host connects the UDS and sends
//!   `CONNECT PORT\n`)
//! - `tcp://HOST:PORT` (remote sandboxes; only over an encrypted channel)
use std::{fmt, path::PathBuf, str::FromStr};

/// `VMADDR_CID_ANY`, written `-1` in addresses.
pub const VSOCK_CID_ANY: u32 = u32::MAX;

/// Where a ferry endpoint listens or connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A unix domain socket path.
    Unix(PathBuf),
    /// AF_VSOCK context id and port.
    Vsock { cid: u32, port: u32 },
    /// A hybrid-vsock unix socket and the guest port to ask for.
    HybridVsock { uds: PathBuf, port: u32 },
    /// `host:port`.
    Tcp(String),
}

/// Why an address string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddressError {
    #[error(
        "address {0:?} has no scheme: use unix://PATH, vsock://CID:PORT, hvsock://UDS:PORT or tcp://HOST:PORT"
    )]
    NoScheme(String),
    #[error("address {0:?} has an unknown scheme: use unix://, vsock://, hvsock:// or tcp://")]
    UnknownScheme(String),
    #[error("address {0:?}: {1}")]
    Invalid(String, &'static str),
}

fn split_port<'a>(full: &str, rest: &'a str) -> Result<(&'a str, u32), AddressError> {
    let (head, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| AddressError::Invalid(full.into(), "missing :PORT"))?;
    let port = port
        .parse::<u32>()
        .map_err(|_| AddressError::Invalid(full.into(), "port is not a number"))?;
    Ok((head, port))
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| AddressError::NoScheme(s.into()))?;
        match scheme {
            "unix" => {
                if rest.is_empty() {
                    return Err(AddressError::Invalid(s.into(), "empty socket path"));
                }
                Ok(Address::Unix(PathBuf::from(rest)))
            }
            "vsock" => {
                let (cid, port) = split_port(s, rest)?;
                let cid = if cid == "-1" {
                    VSOCK_CID_ANY
                } else {
                    cid.parse::<u32>()
                        .map_err(|_| AddressError::Invalid(s.into(), "CID is not a number or -1"))?
                };
                Ok(Address::Vsock { cid, port })
            }
            "hvsock" => {
                let (uds, port) = split_port(s, rest)?;
                if uds.is_empty() {
                    return Err(AddressError::Invalid(s.into(), "empty unix socket path"));
                }
                Ok(Address::HybridVsock {
                    uds: PathBuf::from(uds),
                    port,
                })
            }
            "tcp" => {
                let (host, _port) = split_port(s, rest)?;
                if host.is_empty() {
                    return Err(AddressError::Invalid(s.into(), "empty host"));
                }
                Ok(Address::Tcp(rest.to_string()))
            }
            _ => Err(AddressError::UnknownScheme(s.into())),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(p) => write!(f, "unix://{}", p.display()),
            Address::Vsock { cid, port } if *cid == VSOCK_CID_ANY => write!(f, "vsock://-1:{port}"),
            Address::Vsock { cid, port } => write!(f, "vsock://{cid}:{port}"),
            Address::HybridVsock { uds, port } => write!(f, "hvsock://{}:{port}", uds.display()),
            Address::Tcp(hp) => write!(f, "tcp://{hp}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_scheme() {
        assert_eq!(
            "unix:///run/ferry.sock".parse::<Address>().unwrap(),
            Address::Unix("/run/ferry.sock".into())
        );
        assert_eq!(
            "vsock://3:1025".parse::<Address>().unwrap(),
            Address::Vsock { cid: 3, port: 1025 }
        );
        assert_eq!(
            "vsock://-1:1025".parse::<Address>().unwrap(),
            Address::Vsock {
                cid: VSOCK_CID_ANY,
                port: 1025
            }
        );
        assert_eq!(
            "hvsock:///tmp/v.sock:1025".parse::<Address>().unwrap(),
            Address::HybridVsock {
                uds: "/tmp/v.sock".into(),
                port: 1025
            }
        );
        assert_eq!(
            "tcp://10.0.0.1:9000".parse::<Address>().unwrap(),
            Address::Tcp("10.0.0.1:9000".into())
        );
    }

    #[test]
    fn round_trips_through_display() {
        for s in [
            "unix:///a/b",
            "vsock://-1:7",
            "vsock://3:1024",
            "hvsock:///x:9",
            "tcp://h:1",
        ] {
            assert_eq!(s.parse::<Address>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn refuses_bad_addresses() {
        for s in [
            "/run/x.sock",
            "http://x",
            "vsock://a:1",
            "vsock://3",
            "vsock://3:x",
            "unix://",
            "hvsock://:3",
            "tcp://:1",
        ] {
            assert!(s.parse::<Address>().is_err(), "{s} should be refused");
        }
    }
}
