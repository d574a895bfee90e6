//! `ferry vm faults`: guests that misbehave on purpose, and what the host
//! must do about each.
//!
//! 1. A guest that never comes up (its kernel is told to run an init that
//!    does not exist, and to hang on the resulting panic): the readiness
//!    wait times out and the error carries the guest's console log.
//! 2. A kernel command line with bad values: the agent comes up on its
//!    defaults and says so on the console.
//! 3. A vsock handshake to a port nobody listens on: refused at once, with
//!    an error naming the port, not a hang.
//! 4. The agent killed inside the guest (SysRq-I from QEMU's monitor: SIGKILL
//!    to every process but init): ferry's init restarts it, its store
//!    survives, and the sync loop reconnects and delivers the next version.
//! 5. PowerOff: the guest powers off cleanly.
use std::time::{Duration, Instant};

use ferry_host::{HostError, client::AgentClient};
use ferry_proto::{Address, transport::TransportError};
use ferry_tree::manifest::hex;

use crate::{
    cli::FaultsArgs,
    demo::{HostPod, SyncLoop, VOLUMES, boot, config_payload, sa_payload, verify, wait_for},
    error::{Result, VmError},
    setup::{Workdir, prepare},
    stats::ms,
    vm::{Vm, tail},
};

/// The agent's vsock port when the command line gives none (or a bad one).
const DEFAULT_PORT: u32 = 1025;
const BAD_CMDLINE: &str =
    "ferry.port=notaport ferry.store_size=12Q ferry.log=loud ferry.txn_timeout=0 ferry.colour=blue";

fn check(ok: bool, what: impl Into<String>) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(VmError::Check(what.into()))
    }
}

fn console(vm: &Vm) -> String {
    String::from_utf8_lossy(&std::fs::read(&vm.console).unwrap_or_default()).into_owned()
}

/// Connects to the agent again after it went away, within `timeout`.
async fn reconnect(vm: &mut Vm, timeout: Duration) -> Result<AgentClient> {
    let deadline = Instant::now() + timeout;
    loop {
        match AgentClient::connect(&vm.addr, "ferry vm faults", 1, Duration::from_secs(2)).await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() > deadline => {
                return Err(vm.guest_error(format!(
                    "the agent did not come back within {timeout:?}: {e}"
                )));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Runs `ferry vm faults`.
pub async fn run(args: FaultsArgs) -> Result<()> {
    println!("ferry vm faults: guests that misbehave on purpose");
    let prep = prepare(&args.boot)?;
    let mut work = Workdir::new(args.boot.dir.as_deref())?;
    println!("  workdir     {}", work.path.display());
    let res = faults_in(&args, &prep, &work.path).await;
    if res.is_err() || args.boot.keep {
        work.keep();
        println!("\nconsole logs kept in {}", work.path.display());
    }
    res
}

async fn faults_in(
    args: &FaultsArgs,
    prep: &crate::setup::Prepared,
    dir: &std::path::Path,
) -> Result<()> {
    // 1. A guest that does not come up.
    println!("\n[1] a guest that never comes up (rdinit=/nonexistent panic=0), boot timeout 20 s");
    let mut a = args.boot.clone();
    a.boot_timeout = 20;
    let t = Instant::now();
    match boot(
        prep,
        &a,
        &dir.join("no-init"),
        "rdinit=/nonexistent panic=0",
    )
    .await
    {
        Ok(_) => {
            return Err(VmError::Check(
                "a guest without an init answered Hello".into(),
            ));
        }
        Err(VmError::Guest { why, tail, .. }) => {
            check(
                why.contains("did not come up"),
                format!("unexpected failure: {why}"),
            )?;
            check(
                tail.contains("Kernel panic"),
                format!("the error does not carry the console's panic message:\n{tail}"),
            )?;
            println!(
                "      refused after {} with the console log attached: ✓",
                ms(t.elapsed())
            );
            println!("        {why}");
            let panic = tail
                .lines()
                .find(|l| l.contains("Kernel panic"))
                .unwrap_or("");
            println!("        console: {}", panic.trim());
        }
        Err(e) => return Err(e),
    }

    // 2. A bad kernel command line: defaults, said on the console.
    println!("\n[2] a bad kernel command line: {BAD_CMDLINE}");
    let mut a = args.boot.clone();
    a.port = DEFAULT_PORT;
    let (mut vm, client, took) = boot(
        prep,
        &a,
        &dir.join("faults"),
        &format!("{BAD_CMDLINE} sysrq_always_enabled=1"),
    )
    .await?;
    println!(
        "      the agent came up on its default port {DEFAULT_PORT} after {}",
        ms(took)
    );
    let log = console(&vm);
    for key in [
        "ferry.port=\"notaport\"",
        "ferry.store_size=\"12Q\"",
        "ferry.log=\"loud\"",
        "ferry.txn_timeout=\"0\"",
        "ferry.colour",
    ] {
        let line = log
            .lines()
            .find(|l| l.contains(key))
            .ok_or_else(|| vm.guest_error(format!("the console does not mention the bad {key}")))?;
        let msg = line.split("ferry-init: ").nth(1).unwrap_or(line).trim();
        println!("      console: {msg} ✓");
    }
    let limits = client.hello.limits.clone();
    check(
        limits.max_store_bytes == 64 << 20,
        format!(
            "the store quota should follow the default 64Mi store, got {}",
            limits.max_store_bytes
        ),
    )?;

    // 3. A handshake to a port nobody listens on.
    println!(
        "\n[3] a vsock handshake to port {} where nothing listens",
        DEFAULT_PORT + 1
    );
    let wrong = match &vm.addr {
        Address::HybridVsock { uds, .. } => Address::HybridVsock {
            uds: uds.clone(),
            port: DEFAULT_PORT + 1,
        },
        other => other.clone(),
    };
    let t = Instant::now();
    match AgentClient::connect(&wrong, "ferry vm faults", 1, Duration::from_secs(10)).await {
        Ok(_) => return Err(VmError::Check(format!("{wrong} answered Hello"))),
        Err(HostError::Transport(e @ TransportError::HandshakeRefused { .. })) => {
            println!("      refused after {}: {e} ✓", ms(t.elapsed()));
        }
        Err(e) => {
            return Err(VmError::Check(format!(
                "{wrong}: expected a refused handshake, got: {e}"
            )));
        }
    }

    // 4. The agent killed inside the guest.
    println!(
        "\n[4] the agent killed inside the guest (SysRq-I from QEMU's monitor: SIGKILL to all but init)"
    );
    let pod = HostPod::new(&dir.join("faults"))?;
    for (vol, p) in [
        (VOLUMES[0].0, sa_payload(1)),
        (VOLUMES[1].0, sa_payload(100)),
        (VOLUMES[2].0, config_payload(1)),
    ] {
        pod.write(vol, &p)?;
    }
    let sync = SyncLoop::start(pod.sync_config(&vm));
    for (vol, _) in VOLUMES {
        let d = pod.digest(vol)?;
        wait_for(&client, vol, &d, Duration::from_secs(30)).await?;
    }
    println!("      pod synced and verified; killing the agent");
    drop(client);
    let t = Instant::now();
    vm.monitor("sendkey alt-sysrq-i").await?;
    // The agent is back when a new connection answers Hello.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let client = reconnect(&mut vm, Duration::from_secs(30)).await?;
    println!("      agent back {} after the kill", ms(t.elapsed()));
    let log = console(&vm);
    check(
        log.contains("the agent was killed by signal 9"),
        format!(
            "the console does not show the agent being killed:\n{}",
            tail(&vm.console, 30)
        ),
    )?;
    println!("      console: the agent was killed by signal 9; restarted by ferry-init ✓");
    for (vol, _) in VOLUMES {
        let d = pod.digest(vol)?;
        let held = client
            .summary(vol)
            .map(|s| s.digest.clone())
            .unwrap_or_default();
        check(
            held == d,
            format!("{vol}: the restarted agent lost its store ({})", hex(&held)),
        )?;
    }
    println!(
        "      the restarted agent still holds all three volumes (its tmpfs belongs to PID 1) ✓"
    );
    let t = Instant::now();
    let want = pod.write(VOLUMES[0].0, &sa_payload(2))?;
    wait_for(&client, VOLUMES[0].0, &want, Duration::from_secs(30)).await?;
    verify(&client, VOLUMES[0].0, &want).await?;
    println!(
        "      next token rotation reached the restarted agent {} after kubelet wrote it, verified in the guest ✓",
        ms(t.elapsed())
    );
    let summary = sync.stop().await?;
    check(
        summary.reconnects >= 1,
        format!("the sync loop did not reconnect: {summary:?}"),
    )?;
    println!(
        "      sync loop reconnected {} time(s) ✓",
        summary.reconnects
    );

    // 5. Power off.
    println!("\n[5] PowerOff");
    let off = vm.power_off(&client).await?;
    println!("      QEMU exited cleanly {} after PowerOff ✓", ms(off));
    println!("\nall faults handled");
    Ok(())
}
