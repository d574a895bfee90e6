//! Everything a boot needs, gathered once: QEMU and `vhost-device-vsock`,
//! the accelerator, the kernel and its modules, the static agent, and the
//! initramfs that holds them.
use std::{
    fs,
    path::{Path, PathBuf},
};

use crate::{
    cli::{AccelChoice, BootArgs},
    cpio::CpioWriter,
    error::{Result, io_err},
    host::{self, Accel},
    kernel::{self, Kernel},
    vm::VmConfig,
};

/// Where kernels are cached: `$XDG_CACHE_HOME/ferry-vm`, else
/// `~/.cache/ferry-vm`, else `<target>/ferry-vm`.
pub fn default_cache() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(x).join("ferry-vm");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h).join(".cache/ferry-vm");
    }
    host::target_dir().join("ferry-vm")
}

/// Writes the initramfs: `/init` (the static agent), `/dev/console`
/// (`c 5 1`, so PID 1 has a console from its first instruction), the mount
/// points, and the modules with their load order in
/// `/lib/modules/ferry.order`. Returns its size.
pub fn write_initramfs(out: &Path, agent: &[u8], modules: &[(String, PathBuf)]) -> Result<u64> {
    let tmp = out.with_extension("cpio.partial");
    let f = fs::File::create(&tmp).map_err(io_err(&tmp))?;
    let mut w = CpioWriter::new(std::io::BufWriter::new(f));
    let e = io_err(&tmp);
    let mut write = || -> std::io::Result<u64> {
        for d in ["dev", "proc", "sys", "run", "lib", "lib/modules"] {
            w.dir(d, 0o755)?;
        }
        w.char_dev("dev/console", 0o600, 5, 1)?;
        w.file("init", 0o755, agent)?;
        let mut order = String::new();
        for (name, path) in modules {
            let file = format!("{name}.ko");
            w.file(&format!("lib/modules/{file}"), 0o644, &fs::read(path)?)?;
            order.push_str(&file);
            order.push('\n');
        }
        w.file("lib/modules/ferry.order", 0o644, order.as_bytes())?;
        Ok(0)
    };
    write().map_err(e)?;
    let (_, size) = w.finish().map_err(io_err(&tmp))?;
    fs::rename(&tmp, out).map_err(io_err(out))?;
    Ok(size)
}

/// The pieces of a boot, ready.
pub struct Prepared {
    pub kernel: Kernel,
    pub initramfs: PathBuf,
    pub qemu: PathBuf,
    pub vhost_device_vsock: PathBuf,
    pub accel: Accel,
}

/// Finds or fetches every piece, printing what it uses.
pub fn prepare(a: &BootArgs) -> Result<Prepared> {
    let qemu = host::qemu()?;
    let vdv = host::vhost_device_vsock()?;
    let (accel, why) = match a.accel {
        AccelChoice::Auto => host::detect_accel(),
        AccelChoice::Tcg => (Accel::Tcg, "TCG (asked for)".into()),
        AccelChoice::Kvm => (Accel::Kvm, "KVM (asked for)".into()),
    };
    println!("  qemu        {} ({why})", qemu.display());
    println!("  vsock       {}", vdv.display());
    let cache = a.cache.clone().unwrap_or_else(default_cache);
    let kernel = kernel::fetch(&cache)?;
    let modules = kernel::modules(&kernel)?;
    let agent_path = match &a.agent {
        Some(p) => p.clone(),
        None => host::build_static_agent()?,
    };
    let agent = host::read_static_agent(&agent_path)?;
    let initramfs = host::target_dir().join("ferry-vm/initramfs.cpio");
    fs::create_dir_all(initramfs.parent().expect("has a parent")).map_err(io_err(&initramfs))?;
    let size = write_initramfs(&initramfs, &agent, &modules)?;
    println!(
        "  initramfs   {} ({:.1} MiB: /init = {} static, {} modules: {})",
        initramfs.display(),
        size as f64 / (1 << 20) as f64,
        agent_path.display(),
        modules.len(),
        modules
            .iter()
            .map(|(m, _)| m.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(Prepared {
        kernel,
        initramfs,
        qemu,
        vhost_device_vsock: vdv,
        accel,
    })
}

impl Prepared {
    /// A VM configuration from these pieces and the boot arguments, with
    /// `extra` appended to the kernel command line.
    pub fn vm_config(&self, a: &BootArgs, dir: &Path, extra: &str) -> VmConfig {
        let mut cmdline = format!("ferry.store_size={}", a.store_size);
        for c in [a.cmdline.as_str(), extra] {
            if !c.trim().is_empty() {
                cmdline.push(' ');
                cmdline.push_str(c.trim());
            }
        }
        VmConfig {
            qemu: self.qemu.clone(),
            vhost_device_vsock: self.vhost_device_vsock.clone(),
            vmlinuz: self.kernel.vmlinuz.clone(),
            initramfs: self.initramfs.clone(),
            machine: a.machine,
            accel: self.accel,
            memory_mib: a.memory,
            cpus: a.cpus,
            port: a.port,
            cmdline,
            dir: dir.to_path_buf(),
        }
    }
}

/// A working directory for one run: `--dir`, or a new one under /tmp
/// (short, because unix socket paths are limited to 108 bytes). Removed on
/// drop unless kept.
pub struct Workdir {
    pub path: PathBuf,
    tmp: Option<tempfile::TempDir>,
}

impl Workdir {
    /// `dir` if given, else a new temporary directory.
    pub fn new(dir: Option<&Path>) -> Result<Workdir> {
        match dir {
            Some(d) => {
                fs::create_dir_all(d).map_err(io_err(d))?;
                Ok(Workdir {
                    path: d.to_path_buf(),
                    tmp: None,
                })
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("ferry-vm-")
                    .tempdir_in("/tmp")
                    .map_err(io_err(Path::new("/tmp")))?;
                Ok(Workdir {
                    path: t.path().to_path_buf(),
                    tmp: Some(t),
                })
            }
        }
    }

    /// Keeps the directory after the run (logs, console, trees).
    pub fn keep(&mut self) {
        if let Some(t) = self.tmp.take() {
            let _ = t.keep();
        }
    }
}
