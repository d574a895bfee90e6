//! Validation of everything path-like that crosses the wire.
//!
//! A volume name is `[a-z0-9][a-z0-9._-]{0,252}`. A path is relative to its
//! volume: `/`-separated components, none empty, `.` or `..`, no NUL, the
//! first component not starting with `..` (those names belong to the
//! kubelet layout: `..data`, `..<version>`), within the length and depth
//! limits. A symlink target must be relative and, resolved lexically from the
//! link's directory, stay inside the volume.
use std::fmt;

/// Length and shape limits for paths. The guest's are authoritative.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest relative path, in bytes.
    pub max_path_len: usize,
    /// Most components in a path.
    pub max_depth: usize,
    /// Longest single component, in bytes (NAME_MAX).
    pub max_component_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_path_len: 4096,
            max_depth: 32,
            max_component_len: 255,
        }
    }
}

/// Why a name or path was refused. Messages name the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("invalid volume name {0:?}: must match [a-z0-9][a-z0-9._-]{{0,252}}")]
    VolumeName(String),
    #[error("invalid path {path:?}: {why}")]
    Path { path: String, why: PathWhy },
    #[error("symlink {path:?} -> {target:?} is refused: {why}")]
    Target {
        path: String,
        target: String,
        why: &'static str,
    },
}

/// The precise reason a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathWhy {
    Empty,
    Absolute,
    DotDot,
    Dot,
    EmptyComponent,
    Nul,
    Reserved,
    TooLong,
    TooDeep,
    ComponentTooLong,
}

impl fmt::Display for PathWhy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathWhy::Empty => "empty path",
            PathWhy::Absolute => "absolute paths are not allowed",
            PathWhy::DotDot => "'..' components are not allowed",
            PathWhy::Dot => "'.' components are not allowed",
            PathWhy::EmptyComponent => "empty component (double or trailing '/')",
            PathWhy::Nul => "NUL byte in path",
            PathWhy::Reserved => {
                "first component starts with '..' (reserved for the kubelet layout)"
            }
            PathWhy::TooLong => "path too long",
            PathWhy::TooDeep => "path too deep",
            PathWhy::ComponentTooLong => "component longer than 255 bytes",
        })
    }
}

/// Checks a volume name: `[a-z0-9][a-z0-9._-]{0,252}`.
pub fn validate_volume_name(name: &str) -> Result<(), PathError> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 253
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(PathError::VolumeName(name.to_string()))
    }
}

/// Checks a relative entry path against `limits`.
pub fn validate_rel_path(path: &str, limits: &Limits) -> Result<(), PathError> {
    let bad = |why| {
        Err(PathError::Path {
            path: path.to_string(),
            why,
        })
    };
    if path.is_empty() {
        return bad(PathWhy::Empty);
    }
    if path.starts_with('/') {
        return bad(PathWhy::Absolute);
    }
    if path.contains('\0') {
        return bad(PathWhy::Nul);
    }
    if path.len() > limits.max_path_len {
        return bad(PathWhy::TooLong);
    }
    let mut depth = 0;
    for (i, c) in path.split('/').enumerate() {
        depth += 1;
        match c {
            "" => return bad(PathWhy::EmptyComponent),
            "." => return bad(PathWhy::Dot),
            ".." => return bad(PathWhy::DotDot),
            _ => {}
        }
        if i == 0 && c.starts_with("..") {
            return bad(PathWhy::Reserved);
        }
        if c.len() > limits.max_component_len {
            return bad(PathWhy::ComponentTooLong);
        }
    }
    if depth > limits.max_depth {
        return bad(PathWhy::TooDeep);
    }
    Ok(())
}

/// Checks that `target`, the target of the symlink at `link_path` (itself a
/// valid relative path), is relative and stays inside the volume when
/// resolved lexically from the link's directory. Symlinks inside the volume
/// are only ever created by us from validated entries, so lexical resolution
/// is exact: no link in the chain can point outside either.
pub fn validate_symlink_target(
    link_path: &str,
    target: &str,
    limits: &Limits,
) -> Result<(), PathError> {
    let bad = |why| {
        Err(PathError::Target {
            path: link_path.to_string(),
            target: target.to_string(),
            why,
        })
    };
    if target.is_empty() {
        return bad("empty target");
    }
    if target.starts_with('/') {
        return bad("absolute targets are not allowed");
    }
    if target.contains('\0') {
        return bad("NUL byte in target");
    }
    if target.len() > limits.max_path_len {
        return bad("target too long");
    }
    // Lexical resolution is only exact when every `..` comes before the
    // first name: `s/..` through a symlink `s -> ..` would climb twice while
    // counting once. So targets have the form `(../)*name(/name)*`; each `..`
    // then climbs a real directory of the link's own parent chain, and each
    // name descends (through links validated the same way) inside the volume.
    let mut depth: isize = link_path.split('/').count() as isize - 1;
    let mut seen_name = false;
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." if seen_name => return bad("'..' after a name is not allowed"),
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return bad("target leaves the volume");
                }
            }
            _ => seen_name = true,
        }
    }
    Ok(())
}

/// The parent of a relative path, or `None` for a top-level path.
pub fn parent(path: &str) -> Option<&str> {
    path.rsplit_once('/').map(|(p, _)| p)
}

/// The first component of a relative path (the user-visible top-level name).
pub fn top_level(path: &str) -> &str {
    path.split('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_names() {
        for ok in ["a", "kube-api-access-x7k2p", "0", "a.b_c-d"] {
            validate_volume_name(ok).unwrap();
        }
        let long = "a".repeat(254);
        for bad in ["", "A", "-a", ".a", "a/b", "..", "a b", "é", long.as_str()] {
            assert!(validate_volume_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn paths() {
        let l = Limits::default();
        for ok in ["a", "a/b/c", "ca.crt", ".hidden", "a/..b", "a/.x"] {
            validate_rel_path(ok, &l).unwrap();
        }
        let cases = [
            ("", PathWhy::Empty),
            ("/etc/passwd", PathWhy::Absolute),
            ("a/../../x", PathWhy::DotDot),
            ("..", PathWhy::DotDot),
            ("./a", PathWhy::Dot),
            ("a//b", PathWhy::EmptyComponent),
            ("a/", PathWhy::EmptyComponent),
            ("a\0b", PathWhy::Nul),
            ("..data", PathWhy::Reserved),
            ("..2026_01_01", PathWhy::Reserved),
        ];
        for (p, why) in cases {
            assert_eq!(
                validate_rel_path(p, &l),
                Err(PathError::Path {
                    path: p.into(),
                    why
                }),
                "{p:?}"
            );
        }
        let deep = vec!["d"; 33].join("/");
        assert!(matches!(
            validate_rel_path(&deep, &l),
            Err(PathError::Path {
                why: PathWhy::TooDeep,
                ..
            })
        ));
        let long = "x".repeat(256);
        assert!(matches!(
            validate_rel_path(&long, &l),
            Err(PathError::Path {
                why: PathWhy::ComponentTooLong,
                ..
            })
        ));
    }

    #[test]
    fn symlink_targets() {
        let l = Limits::default();
        validate_symlink_target("a", "b", &l).unwrap();
        validate_symlink_target("d/a", "../b", &l).unwrap();
        validate_symlink_target("d/e/a", "../../b/c", &l).unwrap();
        validate_symlink_target("a", "./b", &l).unwrap();
        let refused = [
            ("a", "../x"),
            ("a", "/etc/shadow"),
            ("d/a", "../../x"),
            ("a", ""),
            ("d/a", "x/../../../y"),
            // Climbs twice through `d/s -> ..` while lexically counting once.
            ("d/t", "s/../.."),
        ];
        for (p, t) in refused {
            assert!(validate_symlink_target(p, t, &l).is_err(), "{p} -> {t}");
        }
    }
}
