//! What the host needs to boot a guest: QEMU, `vhost-device-vsock`, a
//! statically linked `ferry-agent`, and the choice of accelerator.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::error::{Result, VmError, io_err};

/// The Rust target the static agent is built for; `--target` also keeps
/// its build apart from the workspace's ordinary (dynamic) one.
pub const STATIC_TARGET: &str = "x86_64-unknown-linux-gnu";

/// How QEMU runs the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    /// The `-accel` value.
    pub fn qemu_name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// KVM only when it really works: `/dev/kvm` present, the CPU flags show
/// hardware virtualisation (vmx or svm), and the host is not a PVM nested
/// setup (`/sys/module/kvm_pvm`), where a stock kernel dies with "KVM
/// internal error" (see /work/shared/notes/vm-e2e.md). Otherwise TCG.
pub fn choose_accel(cpuinfo: &str, dev_kvm: bool, kvm_pvm_loaded: bool) -> Accel {
    let hw = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    if dev_kvm && hw && !kvm_pvm_loaded {
        Accel::Kvm
    } else {
        Accel::Tcg
    }
}

/// [`choose_accel`] for this machine, with the reason.
pub fn detect_accel() -> (Accel, String) {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let dev_kvm = Path::new("/dev/kvm").exists();
    let pvm = Path::new("/sys/module/kvm_pvm").exists();
    let a = choose_accel(&cpuinfo, dev_kvm, pvm);
    let why = match a {
        Accel::Kvm => "KVM: /dev/kvm, vmx/svm in /proc/cpuinfo, not PVM".to_string(),
        Accel::Tcg if pvm => {
            "TCG: /dev/kvm is PVM nested virtualisation (kvm_pvm loaded), where stock kernels fail"
                .into()
        }
        Accel::Tcg if !dev_kvm => "TCG: no /dev/kvm".into(),
        Accel::Tcg => "TCG: no vmx/svm in /proc/cpuinfo".into(),
    };
    (a, why)
}

/// `name` on `PATH`, or in `~/.cargo/bin`.
pub fn which(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// QEMU's x86-64 system emulator.
pub fn qemu() -> Result<PathBuf> {
    which("qemu-system-x86_64").ok_or_else(|| {
        VmError::Command(
            "qemu-system-x86_64 not found: apt-get install -y --no-install-recommends qemu-system-x86".into(),
        )
    })
}

/// `vhost-device-vsock`, installed with `cargo install --locked` if missing.
pub fn vhost_device_vsock() -> Result<PathBuf> {
    if let Some(p) = which("vhost-device-vsock") {
        return Ok(p);
    }
    println!("  vsock       cargo install --locked vhost-device-vsock (about 2 minutes, once)");
    let st = Command::new("cargo")
        .args(["install", "--locked", "vhost-device-vsock"])
        .status()
        .map_err(|e| VmError::Command(format!("cargo install vhost-device-vsock: {e}")))?;
    if !st.success() {
        return Err(VmError::Command(format!(
            "cargo install --locked vhost-device-vsock exited with {st}"
        )));
    }
    which("vhost-device-vsock").ok_or_else(|| {
        VmError::Command(
            "vhost-device-vsock installed but not found on PATH or in ~/.cargo/bin".into(),
        )
    })
}

/// The workspace this tool was built from.
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/ferry-vm is two levels down")
        .to_path_buf()
}

/// The workspace's target directory (`CARGO_TARGET_DIR` if set).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d),
        None => workspace_dir().join("target"),
    }
}

/// RUSTFLAGS of the guest agent: static (no loader in the initramfs), and
/// without debug info: the initramfs lives in guest RAM, and the agent
/// shrinks from about 43 MB to 8 MB (symbols stay, for backtraces).
pub const STATIC_RUSTFLAGS: &str = "-C target-feature=+crt-static -C strip=debuginfo";

/// Builds the statically linked agent (`crt-static`) with cargo as a child
/// process, printing the command; cargo makes it a no-op when up to date.
pub fn build_static_agent() -> Result<PathBuf> {
    let ws = workspace_dir();
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(&ws)
        .env("RUSTFLAGS", STATIC_RUSTFLAGS)
        .args([
            "build",
            "--release",
            "--target",
            STATIC_TARGET,
            "--bin",
            "ferry-agent",
        ]);
    println!(
        "  agent       RUSTFLAGS='{STATIC_RUSTFLAGS}' cargo build --release --target {STATIC_TARGET} --bin ferry-agent   (in {})",
        ws.display()
    );
    let st = cmd
        .status()
        .map_err(|e| VmError::Command(format!("cargo build of the static agent: {e}")))?;
    if !st.success() {
        return Err(VmError::Command(format!(
            "cargo build of the static agent exited with {st}"
        )));
    }
    Ok(target_dir().join(STATIC_TARGET).join("release/ferry-agent"))
}

/// Whether the ELF image `bin` is statically linked: a 64-bit ELF with no
/// `PT_INTERP` program header (no dynamic loader to find in the initramfs).
pub fn is_static_elf(bin: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    if bin.len() < 64 || &bin[..4] != b"\x7fELF" || bin[4] != 2 || bin[5] != 1 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([bin[o], bin[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bin[0x20..0x28].try_into().expect("8 bytes")) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).all(|i| {
        let o = phoff + i * phentsize;
        bin.get(o..o + 4)
            .is_some_and(|t| u32::from_le_bytes(t.try_into().expect("4 bytes")) != PT_INTERP)
    })
}

/// Reads the agent at `path` and checks that it can be a guest's `/init`.
pub fn read_static_agent(path: &Path) -> Result<Vec<u8>> {
    let bin = std::fs::read(path).map_err(io_err(path))?;
    if !is_static_elf(&bin) {
        return Err(VmError::Command(format!(
            "{} is not a statically linked x86-64 ELF (it would need a dynamic loader in the guest): build it with RUSTFLAGS='{STATIC_RUSTFLAGS}' cargo build --release --target {STATIC_TARGET} --bin ferry-agent",
            path.display()
        )));
    }
    Ok(bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTEL: &str = "processor\t: 0\nflags\t\t: fpu vme de pse tsc msr vmx ssse3\n";
    const PLAIN: &str = "processor\t: 0\nflags\t\t: fpu vme de pse tsc msr ssse3 hypervisor\n";

    #[test]
    fn kvm_only_when_it_really_works() {
        assert_eq!(choose_accel(INTEL, true, false), Accel::Kvm);
        assert_eq!(
            choose_accel(&INTEL.replace("vmx", "svm"), true, false),
            Accel::Kvm
        );
        assert_eq!(choose_accel(INTEL, true, true), Accel::Tcg, "PVM");
        assert_eq!(choose_accel(PLAIN, true, false), Accel::Tcg, "no vmx/svm");
        assert_eq!(choose_accel(INTEL, false, false), Accel::Tcg, "no /dev/kvm");
        assert_eq!(
            choose_accel("model name\t: vmx-like cpu\n", true, false),
            Accel::Tcg
        );
    }

    #[test]
    fn static_elf_check() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        // The test binary is linked like the workspace: dynamically, unless
        // the build was asked for crt-static.
        let dynamic = me.windows(12).any(|w| w == b"ld-linux-x86");
        assert_eq!(is_static_elf(&me), !dynamic);
        assert!(!is_static_elf(b"#!/bin/sh\n"));
        let mut hdr = vec![0u8; 64];
        hdr[..6].copy_from_slice(b"\x7fELF\x02\x01");
        assert!(is_static_elf(&hdr), "no program headers, no interpreter");
    }
}
