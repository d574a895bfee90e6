//! Plans: the difference between two manifests, and applying one.
//!
//! A plan lists the top-most removed paths (each removes its subtree) and the
//! new or changed entries, parents before children. Applying removes first,
//! then upserts in order. [`apply`] checks every step, so the guest can run
//! what the host sends through it and refuse anything inconsistent before a
//! byte is written.
use crate::{
    manifest::{Entry, Kind, Manifest},
    path::{self, Limits, PathError},
};

/// What turns one manifest into another.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Paths removed with everything below them, in path order; no path here
    /// lies below another.
    pub removes: Vec<String>,
    /// New or changed entries in path order (parents first).
    pub upserts: Vec<Entry>,
}

impl Plan {
    /// True when applying the plan changes nothing.
    pub fn is_empty(&self) -> bool {
        self.removes.is_empty() && self.upserts.is_empty()
    }
}

/// Why a plan step was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("cannot remove {0:?}: no such entry")]
    RemoveMissing(String),
    #[error("cannot add {path:?}: parent {parent:?} does not exist")]
    MissingParent { path: String, parent: String },
    #[error("cannot add {path:?}: parent {parent:?} is not a directory")]
    ParentNotDir { path: String, parent: String },
    #[error("cannot change {path:?} from {from:?} to {to:?} in place: remove it first")]
    KindChange { path: String, from: Kind, to: Kind },
    #[error("invalid mode {mode:#o} for {path:?}: only permission bits (07777) are allowed")]
    BadMode { path: String, mode: u32 },
    #[error("invalid entry {path:?}: {why}")]
    BadEntry { path: String, why: &'static str },
}

/// The plan that turns `old` into `new`.
pub fn diff(old: &Manifest, new: &Manifest) -> Plan {
    let mut plan = Plan::default();
    let mut removed = std::collections::HashSet::new();
    for e in old.iter() {
        let gone = match new.get(&e.path) {
            None => true,
            Some(n) => n.kind != e.kind,
        };
        if !gone {
            continue;
        }
        // Ancestors sort before their descendants, so a removed ancestor is
        // already in the set; its removal takes this entry with it.
        let mut cur = e.path.as_str();
        let mut under_removed = false;
        while let Some(p) = path::parent(cur) {
            if removed.contains(p) {
                under_removed = true;
                break;
            }
            cur = p;
        }
        if !under_removed {
            removed.insert(e.path.as_str());
            plan.removes.push(e.path.clone());
        }
    }
    for e in new.iter() {
        if old.get(&e.path) != Some(e) {
            plan.upserts.push(e.clone());
        }
    }
    plan
}

/// Removes `path` and its subtree from `m`; refuses a path that is not there.
pub fn apply_remove(m: &mut Manifest, path: &str) -> Result<Vec<Entry>, ApplyError> {
    // Only entries of the manifest can go, so a bad path could not do harm;
    // refusing it by name still tells the sender precisely what was wrong.
    path::validate_rel_path(path, &Limits::default())?;
    if m.get(path).is_none() {
        return Err(ApplyError::RemoveMissing(path.to_string()));
    }
    Ok(m.remove_subtree(path))
}

/// Checks one entry on its own: path, mode, and the fields of its kind.
pub fn validate_entry(e: &Entry, limits: &Limits) -> Result<(), ApplyError> {
    path::validate_rel_path(&e.path, limits)?;
    if e.mode & !0o7777 != 0 {
        return Err(ApplyError::BadMode {
            path: e.path.clone(),
            mode: e.mode,
        });
    }
    let bad = |why| {
        Err(ApplyError::BadEntry {
            path: e.path.clone(),
            why,
        })
    };
    match e.kind {
        Kind::File if !e.target.is_empty() => bad("a file has no link target"),
        Kind::Dir if e.size != 0 || !e.target.is_empty() => {
            bad("a directory has no size or target")
        }
        Kind::Symlink if e.size != 0 => bad("a symlink has no size"),
        Kind::Symlink => {
            path::validate_symlink_target(&e.path, &e.target, limits)?;
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Adds or replaces `e` in `m`: the entry must be valid, its parent must be a
/// directory already in `m`, and an existing entry at its path must be of the
/// same kind. Returns the entry it replaced.
pub fn apply_upsert(
    m: &mut Manifest,
    e: Entry,
    limits: &Limits,
) -> Result<Option<Entry>, ApplyError> {
    validate_entry(&e, limits)?;
    if let Some(parent) = path::parent(&e.path) {
        match m.get(parent) {
            None => {
                return Err(ApplyError::MissingParent {
                    path: e.path.clone(),
                    parent: parent.to_string(),
                });
            }
            Some(p) if p.kind != Kind::Dir => {
                return Err(ApplyError::ParentNotDir {
                    path: e.path.clone(),
                    parent: parent.to_string(),
                });
            }
            Some(_) => {}
        }
    }
    if let Some(old) = m.get(&e.path)
        && old.kind != e.kind
    {
        return Err(ApplyError::KindChange {
            path: e.path.clone(),
            from: old.kind,
            to: e.kind,
        });
    }
    Ok(m.insert(e))
}

/// Applies `plan` to `base`, checking every step.
pub fn apply(base: &Manifest, plan: &Plan, limits: &Limits) -> Result<Manifest, ApplyError> {
    let mut m = base.clone();
    for r in &plan.removes {
        apply_remove(&mut m, r)?;
    }
    for e in &plan.upserts {
        apply_upsert(&mut m, e.clone(), limits)?;
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(entries: &[Entry]) -> Manifest {
        entries.iter().cloned().collect()
    }

    #[test]
    fn kind_change_removes_then_adds() {
        let old = m(&[
            Entry::dir("a", 0o755, 0, 0),
            Entry::file("a/x", 0o644, 0, 0, b"1"),
        ]);
        let new = m(&[Entry::file("a", 0o644, 0, 0, b"2")]);
        let p = diff(&old, &new);
        assert_eq!(p.removes, ["a"]);
        assert_eq!(p.upserts.len(), 1);
        assert_eq!(apply(&old, &p, &Limits::default()).unwrap(), new);
    }

    #[test]
    fn unchanged_is_empty_and_metadata_change_is_one_upsert() {
        let a = m(&[
            Entry::dir("d", 0o755, 0, 0),
            Entry::file("d/x", 0o644, 0, 0, b"1"),
        ]);
        assert!(diff(&a, &a).is_empty());
        let b = m(&[
            Entry::dir("d", 0o750, 0, 0),
            Entry::file("d/x", 0o644, 0, 0, b"1"),
        ]);
        let p = diff(&a, &b);
        assert!(p.removes.is_empty());
        assert_eq!(p.upserts, [Entry::dir("d", 0o750, 0, 0)]);
    }

    #[test]
    fn apply_refuses_inconsistent_steps() {
        let l = Limits::default();
        let base = m(&[Entry::file("f", 0o644, 0, 0, b"1")]);
        let cases: Vec<(Plan, &str)> = vec![
            (
                Plan {
                    removes: vec!["nope".into()],
                    upserts: vec![],
                },
                "no such entry",
            ),
            (
                Plan {
                    removes: vec![],
                    upserts: vec![Entry::file("d/x", 0o644, 0, 0, b"")],
                },
                "does not exist",
            ),
            (
                Plan {
                    removes: vec![],
                    upserts: vec![Entry::file("f/x", 0o644, 0, 0, b"")],
                },
                "not a directory",
            ),
            (
                Plan {
                    removes: vec![],
                    upserts: vec![Entry::dir("f", 0o755, 0, 0)],
                },
                "remove it first",
            ),
            (
                Plan {
                    removes: vec![],
                    upserts: vec![Entry::file("../x", 0o644, 0, 0, b"")],
                },
                "'..'",
            ),
            (
                Plan {
                    removes: vec![],
                    upserts: vec![Entry::symlink("l", "../../etc", 0, 0)],
                },
                "leaves the volume",
            ),
            (
                Plan {
                    removes: vec![],
                    upserts: vec![Entry {
                        mode: 0o100644,
                        ..Entry::file("g", 0, 0, 0, b"")
                    }],
                },
                "invalid mode",
            ),
        ];
        for (plan, want) in cases {
            let err = apply(&base, &plan, &l).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
    }

    /// A random tree: paths over a tiny alphabet so that trees overlap, kinds
    /// forced to Dir wherever a path has children.
    fn arb_manifest() -> impl Strategy<Value = Manifest> {
        let comp = prop::sample::select(vec!["a", "b", "c", "a.b", "k"]);
        let path = prop::collection::vec(comp, 1..4).prop_map(|v| v.join("/"));
        let leaf = (
            0u8..3,
            0u32..4,
            prop::sample::select(vec![&b""[..], b"x", b"yy", b"zzz"]),
        );
        prop::collection::btree_map(path, leaf, 0..24).prop_map(|raw| {
            let mut all: std::collections::BTreeMap<String, (u8, u32, &[u8])> = raw.clone();
            // Every ancestor exists, and is a directory.
            for p in raw.keys() {
                let mut cur = p.as_str();
                while let Some(parent) = path::parent(cur) {
                    all.insert(parent.to_string(), (1, 0, b""));
                    cur = parent;
                }
            }
            let has_children = |p: &str| {
                all.keys()
                    .any(|k| k.len() > p.len() && k.starts_with(p) && k.as_bytes()[p.len()] == b'/')
            };
            all.iter()
                .map(|(p, (kind, modesel, content))| {
                    let mode = [0o644, 0o600, 0o755, 0o2775][*modesel as usize];
                    if has_children(p) || *kind == 1 {
                        Entry::dir(p, mode, 0, 1000)
                    } else if *kind == 0 {
                        Entry::file(p, mode, 0, 1000, content)
                    } else {
                        Entry::symlink(p, "k", 0, 0)
                    }
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn applying_the_diff_yields_the_target(a in arb_manifest(), b in arb_manifest()) {
            let plan = diff(&a, &b);
            let got = apply(&a, &plan, &Limits::default()).unwrap();
            prop_assert_eq!(got.digest(), b.digest());
            prop_assert_eq!(got, b);
        }

        #[test]
        fn the_diff_is_minimal(a in arb_manifest(), b in arb_manifest()) {
            let plan = diff(&a, &b);
            for e in &plan.upserts {
                prop_assert!(a.get(&e.path) != Some(e), "unchanged entry {} sent", e.path);
            }
            for r in &plan.removes {
                prop_assert!(b.get(r).is_none_or(|n| Some(n.kind) != a.get(r).map(|o| o.kind)));
            }
            prop_assert!(diff(&b, &b).is_empty());
        }
    }
}
