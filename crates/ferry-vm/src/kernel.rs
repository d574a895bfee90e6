//! The guest kernel: a stock Debian cloud kernel, fetched with `apt-get
//! download` and unpacked with `dpkg -x` into a cache directory (no root
//! needed beyond what apt-get wants, nothing installed on the host), and
//! the modules the guest needs to reach the host over vsock, in load order.
//!
//! The cloud kernel builds serial, initrd, devtmpfs and tmpfs in, and ships
//! virtio and vsock as modules (uncompressed `.ko`, no `modules.dep`), so
//! the dependencies are read from each module's `.modinfo` (`depends=`).
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use crate::error::{Result, VmError, io_err};

/// The meta-package whose dependency names the current cloud kernel.
pub const META_PACKAGE: &str = "linux-image-cloud-amd64";

/// The modules the guest asks for; their dependencies come along.
/// virtio-pci (q35) and virtio-mmio (microvm) carry the vsock device; the
/// virtio vsock transport brings vsock itself.
pub const WANTED_MODULES: [&str; 3] = ["virtio_pci", "virtio_mmio", "vmw_vsock_virtio_transport"];

/// A kernel ready to boot.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>` of the unpacked package.
    pub modules_dir: PathBuf,
    pub release: String,
}

fn run(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .map_err(|e| VmError::Command(format!("{shown}: {e}")))?;
    if !out.status.success() {
        return Err(VmError::Command(format!(
            "{shown} exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The versioned kernel package `apt-cache depends` names for the
/// meta-package (`Depends: linux-image-6.1.0-48-cloud-amd64`).
pub fn package_from_depends(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-") && p.ends_with("-cloud-amd64"))
        .map(str::to_string)
}

/// Fetches (once) and unpacks the cloud kernel into `cache`; reuses what is
/// there. Prints what it does.
pub fn fetch(cache: &Path) -> Result<Kernel> {
    fs::create_dir_all(cache).map_err(io_err(cache))?;
    let depends = match run(Command::new("apt-cache").args(["depends", META_PACKAGE])) {
        Ok(t) if package_from_depends(&t).is_some() => t,
        _ => {
            if let Some(k) = find_unpacked(cache)? {
                println!(
                    "  kernel      {} (cached; apt-cache does not know {META_PACKAGE})",
                    k.vmlinuz.display()
                );
                return Ok(k);
            }
            println!("  kernel      apt-get update (apt does not know {META_PACKAGE} yet)");
            run(Command::new("apt-get").args(["update", "-q"]))?;
            run(Command::new("apt-cache").args(["depends", META_PACKAGE]))?
        }
    };
    let package = package_from_depends(&depends).ok_or_else(|| {
        VmError::Kernel(format!(
            "apt-cache depends {META_PACKAGE} names no cloud kernel:\n{depends}"
        ))
    })?;
    let root = cache.join(&package);
    if let Some(k) = kernel_in(&root)? {
        println!("  kernel      {} (cached)", k.vmlinuz.display());
        return Ok(k);
    }
    let debs = cache.join("debs");
    fs::create_dir_all(&debs).map_err(io_err(&debs))?;
    println!(
        "  kernel      apt-get download {package}; dpkg -x into {}",
        root.display()
    );
    run(Command::new("apt-get")
        .args(["download", "-q", &package])
        .current_dir(&debs))?;
    let deb = fs::read_dir(&debs)
        .map_err(io_err(&debs))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{package}_")) && n.ends_with(".deb"))
        })
        .ok_or_else(|| {
            VmError::Kernel(format!(
                "apt-get download left no {package}_*.deb in {}",
                debs.display()
            ))
        })?;
    let tmp = cache.join(format!("{package}.partial"));
    let _ = fs::remove_dir_all(&tmp);
    run(Command::new("dpkg").arg("-x").arg(&deb).arg(&tmp))?;
    fs::rename(&tmp, &root).map_err(io_err(&root))?;
    kernel_in(&root)?
        .ok_or_else(|| VmError::Kernel(format!("{} holds no boot/vmlinuz-*", root.display())))
}

/// Any kernel already unpacked in `cache` (used when apt cannot answer).
fn find_unpacked(cache: &Path) -> Result<Option<Kernel>> {
    let Ok(rd) = fs::read_dir(cache) else {
        return Ok(None);
    };
    for e in rd.flatten() {
        if e.file_name().to_string_lossy().ends_with("-cloud-amd64")
            && let Some(k) = kernel_in(&e.path())?
        {
            return Ok(Some(k));
        }
    }
    Ok(None)
}

/// The kernel unpacked at `root`, if it is complete.
pub fn kernel_in(root: &Path) -> Result<Option<Kernel>> {
    let boot = root.join("boot");
    let Ok(rd) = fs::read_dir(&boot) else {
        return Ok(None);
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(release) = name.strip_prefix("vmlinuz-") {
            let modules_dir = root.join("lib/modules").join(release);
            if modules_dir.is_dir() {
                return Ok(Some(Kernel {
                    vmlinuz: e.path(),
                    modules_dir,
                    release: release.to_string(),
                }));
            }
        }
    }
    Ok(None)
}

/// The `depends=` list of a module's `.modinfo` section.
pub fn modinfo_depends(ko: &[u8]) -> Vec<String> {
    ko.split(|b| *b == 0)
        .filter_map(|s| s.strip_prefix(b"depends="))
        .flat_map(|d| d.split(|b| *b == b','))
        .filter(|d| !d.is_empty())
        .map(|d| String::from_utf8_lossy(d).into_owned())
        .collect()
}

/// Every `.ko` under `dir`, by module name (`-` read as `_`).
fn index_modules(dir: &Path, out: &mut BTreeMap<String, PathBuf>) -> Result<()> {
    for e in fs::read_dir(dir).map_err(io_err(dir))? {
        let e = e.map_err(io_err(dir))?;
        let p = e.path();
        let ft = e.file_type().map_err(io_err(&p))?;
        if ft.is_dir() {
            index_modules(&p, out)?;
        } else if let Some(n) = p.file_name().and_then(|n| n.to_str()) {
            if let Some(stem) = n.strip_suffix(".ko") {
                out.insert(stem.replace('-', "_"), p.clone());
            } else if n.contains(".ko.") {
                out.entry(n.split(".ko.").next().unwrap_or(n).replace('-', "_"))
                    .or_insert(p.clone());
            }
        }
    }
    Ok(())
}

/// Orders `wanted` and their dependencies so each module comes after what it
/// depends on. `deps` gives each module's dependencies.
pub fn load_order(
    wanted: &[&str],
    deps: &dyn Fn(&str) -> Result<Vec<String>>,
) -> Result<Vec<String>> {
    fn visit(
        m: &str,
        deps: &dyn Fn(&str) -> Result<Vec<String>>,
        done: &mut BTreeSet<String>,
        active: &mut Vec<String>,
        out: &mut Vec<String>,
    ) -> Result<()> {
        if done.contains(m) {
            return Ok(());
        }
        if active.iter().any(|a| a == m) {
            return Err(VmError::Kernel(format!(
                "module dependency cycle: {} -> {m}",
                active.join(" -> ")
            )));
        }
        active.push(m.to_string());
        for d in deps(m)? {
            visit(&d, deps, done, active, out)?;
        }
        active.pop();
        done.insert(m.to_string());
        out.push(m.to_string());
        Ok(())
    }
    let (mut done, mut active, mut out) = (BTreeSet::new(), Vec::new(), Vec::new());
    for m in wanted {
        visit(m, deps, &mut done, &mut active, &mut out)?;
    }
    Ok(out)
}

/// The `.ko` files of [`WANTED_MODULES`] and their dependencies, in load
/// order. A module that is missing from the package is assumed built in.
pub fn modules(kernel: &Kernel) -> Result<Vec<(String, PathBuf)>> {
    let mut index = BTreeMap::new();
    index_modules(&kernel.modules_dir, &mut index)?;
    let deps = |m: &str| -> Result<Vec<String>> {
        match index.get(m) {
            None => Ok(vec![]),
            Some(p) if p.extension().is_some_and(|e| e != "ko") => Err(VmError::Kernel(format!(
                "{} is compressed; the guest loads uncompressed .ko only",
                p.display()
            ))),
            Some(p) => Ok(modinfo_depends(&fs::read(p).map_err(io_err(p))?)),
        }
    };
    let order = load_order(&WANTED_MODULES, &deps)?;
    Ok(order
        .into_iter()
        .filter_map(|m| index.get(&m).map(|p| (m, p.clone())))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_versioned_package() {
        let t = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-48-cloud-amd64\n";
        assert_eq!(
            package_from_depends(t).as_deref(),
            Some("linux-image-6.1.0-48-cloud-amd64")
        );
        assert_eq!(package_from_depends("linux-image-cloud-amd64\n"), None);
    }

    #[test]
    fn reads_depends_from_modinfo() {
        let ko =
            b"\x7fELF...\0license=GPL\0depends=virtio,virtio_ring\0retpoline=Y\0name=virtio_pci\0";
        assert_eq!(modinfo_depends(ko), ["virtio", "virtio_ring"]);
        assert!(modinfo_depends(b"\0depends=\0name=virtio\0").is_empty());
    }

    #[test]
    fn dependencies_load_first_and_once() {
        let table: BTreeMap<&str, Vec<&str>> = [
            (
                "virtio_pci",
                vec!["virtio_ring", "virtio_pci_modern_dev", "virtio"],
            ),
            ("virtio_mmio", vec!["virtio", "virtio_ring"]),
            ("virtio", vec![]),
            ("virtio_ring", vec![]),
            ("virtio_pci_modern_dev", vec![]),
            (
                "vmw_vsock_virtio_transport",
                vec!["virtio", "vmw_vsock_virtio_transport_common", "vsock"],
            ),
            ("vmw_vsock_virtio_transport_common", vec!["vsock"]),
            ("vsock", vec![]),
        ]
        .into_iter()
        .collect();
        let deps = |m: &str| Ok(table[m].iter().map(|s| s.to_string()).collect());
        let order = load_order(&WANTED_MODULES, &deps).unwrap();
        assert_eq!(order.len(), table.len());
        let pos = |m: &str| order.iter().position(|o| o == m).unwrap();
        for (m, ds) in &table {
            for d in ds {
                assert!(pos(d) < pos(m), "{d} must load before {m}: {order:?}");
            }
        }
        let cyclic = |m: &str| Ok(vec![if m == "a" { "b" } else { "a" }.to_string()]);
        assert!(load_order(&["a"], &cyclic).is_err());
    }
}
