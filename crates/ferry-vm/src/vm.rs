//! One guest: `vhost-device-vsock` and QEMU as child processes of the host
//! tool, the guest's serial console in a file, and the agent reached at
//! `hvsock://<dir>/vsock.sock:<port>`.
//!
//! ```text
//! host tool ── unix vsock.sock ──► vhost-device-vsock ── vhost-user (vhu.sock, shared memfd) ──► QEMU
//!   "CONNECT 1025\n" / "OK n\n"                                          guest: virtio-vsock ─► ferry-agent (vsock://-1:1025)
//! ```
//!
//! Every child is killed when the [`Vm`] is dropped, so a failing check never
//! leaves a guest running.
use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use ferry_host::client::AgentClient;
use ferry_proto::{Address, ferry as pb};
use tokio::{
    io::AsyncWriteExt,
    process::{Child, Command},
};

use crate::{
    error::{Result, VmError, io_err},
    host::Accel,
};

/// The guest's context id on the vsock device.
pub const GUEST_CID: u32 = 3;

/// The QEMU machine type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Machine {
    /// PC with PCIe: virtio-*-pci devices, ACPI power off.
    Q35,
    /// Minimal machine: virtio-mmio devices; under TCG it needs
    /// `tsc_early_khz=` on the kernel command line, which is added for you.
    Microvm,
}

/// How to boot a guest.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub qemu: PathBuf,
    pub vhost_device_vsock: PathBuf,
    pub vmlinuz: PathBuf,
    pub initramfs: PathBuf,
    pub machine: Machine,
    pub accel: Accel,
    pub memory_mib: u32,
    pub cpus: u32,
    /// The agent's vsock port (`ferry.port=`).
    pub port: u32,
    /// Appended to the kernel command line (`ferry.*=` parameters and more).
    pub cmdline: String,
    /// Where the sockets and logs go.
    pub dir: PathBuf,
}

/// A running guest.
pub struct Vm {
    qemu: Child,
    _vhost: Child,
    pub dir: PathBuf,
    pub console: PathBuf,
    pub addr: Address,
    pub started: Instant,
    pub cmdline: String,
}

/// The host's clock in kHz, from /proc/cpuinfo (`cpu MHz`), for microvm's
/// `tsc_early_khz=`.
fn host_khz() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| l.starts_with("cpu MHz"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|mhz| (mhz * 1000.0) as u64)
}

/// The kernel command line for `cfg`.
pub fn kernel_cmdline(cfg: &VmConfig) -> String {
    let mut c = format!("console=ttyS0 panic=-1 quiet ferry.port={}", cfg.port);
    if cfg.machine == Machine::Microvm
        && cfg.accel == Accel::Tcg
        && let Some(khz) = host_khz()
    {
        c.push_str(&format!(" tsc_early_khz={khz}"));
    }
    if !cfg.cmdline.trim().is_empty() {
        c.push(' ');
        c.push_str(cfg.cmdline.trim());
    }
    c
}

/// QEMU's arguments for `cfg`.
pub fn qemu_args(cfg: &VmConfig, vhu: &Path, console: &Path, monitor: &Path) -> Vec<String> {
    let (machine, vsock_dev) = match cfg.machine {
        Machine::Q35 => ("q35", "vhost-user-vsock-pci"),
        Machine::Microvm => ("microvm", "vhost-user-vsock-device"),
    };
    let mut a: Vec<String> = vec![
        "-name".into(),
        "ferry-guest".into(),
        "-accel".into(),
        cfg.accel.qemu_name().into(),
        "-M".into(),
        machine.into(),
    ];
    if cfg.accel == Accel::Kvm {
        a.extend(["-cpu".into(), "host".into()]);
    }
    a.extend([
        "-m".into(),
        format!("{}M", cfg.memory_mib),
        "-smp".into(),
        cfg.cpus.to_string(),
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-display".into(),
        "none".into(),
        "-no-reboot".into(),
        "-kernel".into(),
        cfg.vmlinuz.display().to_string(),
        "-initrd".into(),
        cfg.initramfs.display().to_string(),
        "-append".into(),
        kernel_cmdline(cfg),
        "-serial".into(),
        format!("file:{}", console.display()),
        "-monitor".into(),
        format!("unix:{},server=on,wait=off", monitor.display()),
        // vhost-user needs the guest's memory shared with the backend.
        "-object".into(),
        format!(
            "memory-backend-memfd,id=mem,size={}M,share=on",
            cfg.memory_mib
        ),
        "-numa".into(),
        "node,memdev=mem".into(),
        "-chardev".into(),
        format!("socket,id=vc,path={}", vhu.display()),
        "-device".into(),
        format!("{vsock_dev},chardev=vc"),
    ]);
    a
}

fn log_file(path: &Path) -> Result<Stdio> {
    Ok(Stdio::from(
        std::fs::File::create(path).map_err(io_err(path))?,
    ))
}

/// The last `n` lines of a log file (empty if it cannot be read).
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Vm {
    /// Starts `vhost-device-vsock`, waits for its socket, starts QEMU.
    pub async fn start(cfg: &VmConfig) -> Result<Vm> {
        let dir = cfg.dir.clone();
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let vhu = dir.join("vhu.sock");
        let uds = dir.join("vsock.sock");
        let console = dir.join("console.log");
        let monitor = dir.join("monitor.sock");
        for s in [&vhu, &uds, &monitor] {
            let _ = std::fs::remove_file(s);
        }
        let mut vhost = Command::new(&cfg.vhost_device_vsock)
            .arg("--guest-cid")
            .arg(GUEST_CID.to_string())
            .arg("--socket")
            .arg(&vhu)
            .arg("--uds-path")
            .arg(&uds)
            .stdin(Stdio::null())
            .stdout(log_file(&dir.join("vhost-device-vsock.log"))?)
            .stderr(log_file(&dir.join("vhost-device-vsock.err"))?)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| VmError::Command(format!("{}: {e}", cfg.vhost_device_vsock.display())))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !vhu.exists() {
            if let Ok(Some(st)) = vhost.try_wait() {
                return Err(VmError::Command(format!(
                    "vhost-device-vsock exited with {st}: {}",
                    tail(&dir.join("vhost-device-vsock.err"), 20)
                )));
            }
            if Instant::now() > deadline {
                return Err(VmError::Command(format!(
                    "vhost-device-vsock did not create {} within 10 s",
                    vhu.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let args = qemu_args(cfg, &vhu, &console, &monitor);
        std::fs::write(
            dir.join("qemu.cmd"),
            format!("{} {}\n", cfg.qemu.display(), shell_words(&args)),
        )
        .map_err(io_err(&dir))?;
        let started = Instant::now();
        let qemu = Command::new(&cfg.qemu)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log_file(&dir.join("qemu.log"))?)
            .stderr(log_file(&dir.join("qemu.err"))?)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| VmError::Command(format!("{}: {e}", cfg.qemu.display())))?;
        Ok(Vm {
            qemu,
            _vhost: vhost,
            addr: Address::HybridVsock {
                uds,
                port: cfg.port,
            },
            console,
            dir,
            started,
            cmdline: kernel_cmdline(cfg),
        })
    }

    /// A [`VmError::Guest`] carrying the end of the console log (and QEMU's
    /// own complaints, if any).
    pub fn guest_error(&self, why: impl Into<String>) -> VmError {
        let mut why = why.into();
        let qerr = tail(&self.dir.join("qemu.err"), 10);
        if !qerr.trim().is_empty() {
            why.push_str(&format!("\nQEMU said: {qerr}"));
        }
        VmError::Guest {
            why,
            log: self.console.display().to_string(),
            tail: tail(&self.console, 40),
        }
    }

    /// Whether QEMU has exited, and how.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.qemu.try_wait().ok().flatten()
    }

    /// Waits until the agent answers Hello across the VM boundary; returns
    /// the client and the time since QEMU started. Fails with the console
    /// log if QEMU exits or `timeout` passes first.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<(AgentClient, Duration)> {
        let deadline = self.started + timeout;
        loop {
            if let Some(st) = self.exited() {
                return Err(self.guest_error(format!(
                    "QEMU exited ({st}) before the agent answered on {}",
                    self.addr
                )));
            }
            let last = match AgentClient::connect(&self.addr, "ferry vm", 1, Duration::from_secs(2))
                .await
            {
                Ok(c) => return Ok((c, self.started.elapsed())),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(self.guest_error(format!(
                    "the guest did not come up: no Hello from the agent on {} within {timeout:?} (last attempt: {last})",
                    self.addr
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Asks the agent to power the VM off (the `PowerOff` RPC) and waits for
    /// QEMU to exit cleanly; returns how long that took.
    pub async fn power_off(&mut self, client: &AgentClient) -> Result<Duration> {
        let t0 = Instant::now();
        client
            .rpc()
            .power_off(client.ctx(), &pb::PowerOffRequest::new())
            .await
            .map_err(|e| {
                self.guest_error(format!(
                    "PowerOff refused: {}",
                    ferry_proto::wire::message_of(&e)
                ))
            })?;
        match tokio::time::timeout(Duration::from_secs(30), self.qemu.wait()).await {
            Ok(Ok(st)) if st.success() => Ok(t0.elapsed()),
            Ok(Ok(st)) => Err(self.guest_error(format!("QEMU exited with {st} after PowerOff"))),
            Ok(Err(e)) => Err(VmError::Command(format!("waiting for QEMU: {e}"))),
            Err(_) => Err(self.guest_error("the guest did not power off within 30 s of PowerOff")),
        }
    }

    /// Sends a command to QEMU's human monitor.
    pub async fn monitor(&self, command: &str) -> Result<()> {
        let path = self.dir.join("monitor.sock");
        let mut s = tokio::net::UnixStream::connect(&path)
            .await
            .map_err(io_err(&path))?;
        s.write_all(format!("{command}\n").as_bytes())
            .await
            .map_err(io_err(&path))?;
        // Give QEMU time to read the line before the socket closes.
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok(())
    }

    /// Stops QEMU at once (for a guest that is not expected to shut down).
    pub async fn kill(&mut self) {
        let _ = self.qemu.kill().await;
    }
}

fn shell_words(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:=,".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(machine: Machine, accel: Accel) -> VmConfig {
        VmConfig {
            qemu: "qemu".into(),
            vhost_device_vsock: "vdv".into(),
            vmlinuz: "/k/vmlinuz".into(),
            initramfs: "/k/initramfs.cpio".into(),
            machine,
            accel,
            memory_mib: 256,
            cpus: 1,
            port: 1025,
            cmdline: "ferry.store_size=32Mi".into(),
            dir: "/d".into(),
        }
    }

    #[test]
    fn q35_gets_pci_devices_and_shared_memory() {
        let c = cfg(Machine::Q35, Accel::Tcg);
        let a = qemu_args(
            &c,
            Path::new("/d/vhu.sock"),
            Path::new("/d/console.log"),
            Path::new("/d/mon.sock"),
        );
        let s = a.join(" ");
        assert!(s.contains("-accel tcg -M q35"), "{s}");
        assert!(s.contains("vhost-user-vsock-pci,chardev=vc"), "{s}");
        assert!(
            s.contains("memory-backend-memfd,id=mem,size=256M,share=on"),
            "{s}"
        );
        assert!(!s.contains("-cpu host"));
        assert_eq!(
            kernel_cmdline(&c),
            "console=ttyS0 panic=-1 quiet ferry.port=1025 ferry.store_size=32Mi"
        );
    }

    #[test]
    fn microvm_gets_mmio_devices_and_kvm_the_host_cpu() {
        let c = cfg(Machine::Microvm, Accel::Kvm);
        let s = qemu_args(&c, Path::new("v"), Path::new("c"), Path::new("m")).join(" ");
        assert!(s.contains("-M microvm -cpu host"), "{s}");
        assert!(s.contains("vhost-user-vsock-device,chardev=vc"), "{s}");
        assert!(
            !kernel_cmdline(&c).contains("tsc_early_khz"),
            "only TCG needs it"
        );
    }
}
