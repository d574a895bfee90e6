//! How kubelet turns a volume source into an AtomicWriter payload
//! (`MakePayload` of the secret, configmap, downward API and projected
//! plugins), and the Service Account token of a `kube-api-access-*`
//! projected volume.
use std::{collections::BTreeMap, io};

use super::atomic_writer::{FileProjection, Payload};

/// kubelet's default `defaultMode` (0644, `420` in a pod spec).
pub const DEFAULT_MODE: u32 = 0o644;

/// One `items` entry: a key projected to `path`, with its own mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyToPath {
    pub key: String,
    pub path: String,
    pub mode: Option<u32>,
}

impl KeyToPath {
    /// `key` at `path`, with the volume's default mode.
    pub fn new(key: &str, path: &str) -> Self {
        Self {
            key: key.into(),
            path: path.into(),
            mode: None,
        }
    }

    /// The same item with its own mode.
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = Some(mode);
        self
    }
}

/// Keyed data (a Secret's `data`, a ConfigMap's `data` + `binaryData`).
pub type KeyedData = BTreeMap<String, Vec<u8>>;

/// Keyed data from `(key, value)` pairs.
pub fn keyed<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> KeyedData {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_vec()))
        .collect()
}

/// A Secret or ConfigMap volume's payload: every key at its own name with
/// `default_mode` when `items` is empty, else exactly the items (a missing
/// key is an error unless the source is optional).
pub fn key_payload(
    kind: &str,
    data: &KeyedData,
    items: &[KeyToPath],
    default_mode: Option<u32>,
    optional: bool,
) -> io::Result<Payload> {
    let default_mode = default_mode.unwrap_or(DEFAULT_MODE);
    let mut out = Payload::new();
    if items.is_empty() {
        for (k, v) in data {
            out.insert(
                k.clone(),
                FileProjection {
                    data: v.clone(),
                    mode: default_mode,
                },
            );
        }
        return Ok(out);
    }
    for it in items {
        let Some(v) = data.get(&it.key) else {
            if optional {
                continue;
            }
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{kind} references non-existent {kind} key: {}", it.key),
            ));
        };
        out.insert(
            it.path.clone(),
            FileProjection {
                data: v.clone(),
                mode: it.mode.unwrap_or(default_mode),
            },
        );
    }
    Ok(out)
}

/// One downward API file: a path, the field's current value, a mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownwardItem {
    pub path: String,
    pub value: Vec<u8>,
    pub mode: Option<u32>,
}

/// A downward API volume's payload.
pub fn downward_payload(items: &[DownwardItem], default_mode: Option<u32>) -> Payload {
    let default_mode = default_mode.unwrap_or(DEFAULT_MODE);
    items
        .iter()
        .map(|i| {
            (
                i.path.clone(),
                FileProjection {
                    data: i.value.clone(),
                    mode: i.mode.unwrap_or(default_mode),
                },
            )
        })
        .collect()
}

/// One source of a projected volume.
#[derive(Debug, Clone)]
pub enum Projection {
    Secret {
        data: KeyedData,
        items: Vec<KeyToPath>,
    },
    ConfigMap {
        data: KeyedData,
        items: Vec<KeyToPath>,
    },
    DownwardApi(Vec<DownwardItem>),
    /// `serviceAccountToken` at `path` holding `token`.
    ServiceAccountToken {
        path: String,
        token: Vec<u8>,
    },
}

/// A projected volume's payload: every source's files, with the volume's
/// `defaultMode` where an item has none; a later source wins a path
/// collision (kubelet logs it and overwrites).
pub fn projected_payload(sources: &[Projection], default_mode: Option<u32>) -> io::Result<Payload> {
    let mut out = Payload::new();
    for s in sources {
        let part = match s {
            Projection::Secret { data, items } => {
                key_payload("secret", data, items, default_mode, false)?
            }
            Projection::ConfigMap { data, items } => {
                key_payload("configmap", data, items, default_mode, false)?
            }
            Projection::DownwardApi(items) => downward_payload(items, default_mode),
            Projection::ServiceAccountToken { path, token } => [(
                path.clone(),
                FileProjection {
                    data: token.clone(),
                    mode: default_mode.unwrap_or(DEFAULT_MODE),
                },
            )]
            .into(),
        };
        out.extend(part);
    }
    Ok(out)
}

/// A `kube-api-access-*` volume as the API server injects it: the token,
/// the cluster CA from the `kube-root-ca.crt` ConfigMap, the namespace from
/// the downward API, `defaultMode: 0644`. kubelet rewrites it whenever it
/// refreshes the token (at 80 % of its lifetime).
#[derive(Debug, Clone)]
pub struct ServiceAccount {
    pub namespace: String,
    pub name: String,
    pub ca_crt: Vec<u8>,
    /// How many tokens were issued so far.
    pub generation: u64,
}

impl ServiceAccount {
    /// The `default` account of `namespace`, with a fixed test CA.
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            ca_crt: b"-----BEGIN CERTIFICATE-----\nMIIC/jCCAeagAwIBAgIBADANBgkqhkiG9w0BAQsFADAVMRMwEQYDVQQDEwprdWJl\n-----END CERTIFICATE-----\n".to_vec(),
            generation: 1,
        }
    }

    /// The current token: a JWT-shaped string naming the account and the
    /// generation (its content only has to change on each rotation).
    pub fn token(&self) -> Vec<u8> {
        let claims = format!(
            "{{\"sub\":\"system:serviceaccount:{}:{}\",\"iat\":{},\"exp\":{}}}",
            self.namespace,
            self.name,
            1_800_000_000 + self.generation * 2_880,
            1_800_000_000 + self.generation * 2_880 + 3_607
        );
        let sig = blake3::hash(claims.as_bytes()).to_hex();
        format!(
            "eyJhbGciOiJSUzI1NiJ9.{}.{}",
            hexish(claims.as_bytes()),
            &sig[..43]
        )
        .into_bytes()
    }

    /// kubelet refreshes the token.
    pub fn rotate(&mut self) {
        self.generation += 1;
    }

    /// The volume's payload now.
    pub fn payload(&self) -> Payload {
        projected_payload(
            &[
                Projection::ServiceAccountToken {
                    path: "token".into(),
                    token: self.token(),
                },
                Projection::ConfigMap {
                    data: keyed([("ca.crt", &self.ca_crt[..])]),
                    items: vec![KeyToPath::new("ca.crt", "ca.crt")],
                },
                Projection::DownwardApi(vec![DownwardItem {
                    path: "namespace".into(),
                    value: self.namespace.clone().into_bytes(),
                    mode: None,
                }]),
            ],
            Some(DEFAULT_MODE),
        )
        .expect("the kube-api-access sources reference only keys they hold")
    }
}

fn hexish(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_select_and_rename_keys_with_their_modes() {
        let data = keyed([("a", &b"1"[..]), ("b", b"2"), ("c", b"3")]);
        let all = key_payload("configmap", &data, &[], Some(0o600), false).unwrap();
        assert_eq!(all.len(), 3);
        assert!(all.values().all(|f| f.mode == 0o600));
        let some = key_payload(
            "configmap",
            &data,
            &[
                KeyToPath::new("a", "nested/dir/a.conf"),
                KeyToPath::new("b", "b").mode(0o400),
            ],
            None,
            false,
        )
        .unwrap();
        assert_eq!(some.len(), 2);
        assert_eq!(some["nested/dir/a.conf"].mode, DEFAULT_MODE);
        assert_eq!(some["b"].mode, 0o400);
        let e = key_payload("secret", &data, &[KeyToPath::new("x", "x")], None, false).unwrap_err();
        assert!(e.to_string().contains("non-existent secret key: x"), "{e}");
        assert!(
            key_payload("secret", &data, &[KeyToPath::new("x", "x")], None, true)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn service_account_volume_rotates_only_the_token() {
        let mut sa = ServiceAccount::new("default", "app");
        let p1 = sa.payload();
        assert_eq!(
            p1.keys().collect::<Vec<_>>(),
            ["ca.crt", "namespace", "token"]
        );
        assert_eq!(p1["namespace"].data, b"default");
        sa.rotate();
        let p2 = sa.payload();
        assert_ne!(p1["token"], p2["token"]);
        assert_eq!(p1["ca.crt"], p2["ca.crt"]);
    }
}
