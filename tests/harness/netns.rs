//! Hosts on one machine: a network namespace each, joined by a bridge through veth pairs, each
//! with an address of its own in a /24 (the test process reaches them from the root namespace
//! through the bridge's address, .1). Faults: a host's link down, latency and loss on its
//! outgoing traffic ([`Network::impair`]), every process of a host killed. Dropping the
//! [`Network`] kills what runs in its namespaces and removes them and the bridge. Needs root
//! and iproute2 (`ip`).

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub struct Host {
    pub name: String,
    /// The namespace's name (`ip netns exec NS`).
    pub ns: String,
    pub address: Ipv4Addr,
    /// The veth end in the root namespace, on the bridge: down cuts the host's link.
    outer: String,
}

pub struct Network {
    bridge: String,
    pub gateway: Ipv4Addr,
    pub hosts: Vec<Host>,
}

/// Runs a command; panics with its output unless it succeeds.
fn sh(argv: &[&str]) -> Output {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {argv:?}: {e} (iproute2 installed?)"));
    assert!(
        out.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl Network {
    /// Hosts named `names`, at .10, .11, ... of a /24 picked from this process's id.
    pub fn new(names: &[&str]) -> Network {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "the multi-host tests make network namespaces: they run as root (as CI does)"
        );
        let id = std::process::id() % 200 + 20;
        let bridge = format!("slbr{id}");
        let gateway = Ipv4Addr::new(10, 77, id as u8, 1);
        // Leftovers of an earlier run with the same id.
        let _ = Command::new("ip").args(["link", "del", &bridge]).output();
        sh(&["ip", "link", "add", &bridge, "type", "bridge"]);
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("{gateway}/24"),
            "dev",
            &bridge,
        ]);
        sh(&["ip", "link", "set", &bridge, "up"]);
        let mut network = Network {
            bridge,
            gateway,
            hosts: Vec::new(),
        };
        for (i, name) in names.iter().enumerate() {
            let ns = format!("sl{id}-{name}");
            let outer = format!("sl{id}{name}");
            let address = Ipv4Addr::new(10, 77, id as u8, 10 + i as u8);
            let _ = Command::new("ip").args(["netns", "del", &ns]).output();
            sh(&["ip", "netns", "add", &ns]);
            // Pushed first: Drop removes what was made even if a step below fails.
            network.hosts.push(Host {
                name: name.to_string(),
                ns: ns.clone(),
                address,
                outer: outer.clone(),
            });
            sh(&[
                "ip", "link", "add", &outer, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ]);
            sh(&["ip", "link", "set", &outer, "master", &network.bridge]);
            sh(&["ip", "link", "set", &outer, "up"]);
            let cidr = format!("{address}/24");
            for argv in [
                ["ip", "addr", "add", &cidr, "dev", "eth0"].as_slice(),
                &["ip", "link", "set", "eth0", "up"],
                &["ip", "link", "set", "lo", "up"],
            ] {
                sh(&[&["ip", "netns", "exec", &ns], argv].concat());
            }
        }
        network
    }

    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    /// `program args` on host `name`.
    pub fn command(&self, name: &str, program: &str) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.host(name).ns])
            .arg(program);
        command
    }

    /// Cuts (`false`) or restores (`true`) the host's link: packets stop, connections stay.
    pub fn link(&self, name: &str, up: bool) {
        let state = if up { "up" } else { "down" };
        sh(&["ip", "link", "set", &self.host(name).outer, state]);
    }

    /// Delays every frame the host sends by `delay` and drops a `loss` fraction of them, as
    /// `tc qdisc add dev eth0 root netem delay .. loss ..` would (this machine's kernel has no
    /// netem): the host's link leaves the bridge for a user-space pump between it and a new
    /// veth pair on the bridge, until the [`Impairment`] is dropped.
    pub fn impair(&self, name: &str, delay: Duration, loss: f64) -> Impairment {
        let host = self.host(name);
        let tap = format!("{}i", host.outer);
        let port = format!("{}j", host.outer);
        sh(&[
            "ip", "link", "add", &tap, "type", "veth", "peer", "name", &port,
        ]);
        let mut impairment = Impairment {
            stop: Arc::new(AtomicBool::new(false)),
            pumps: Vec::new(),
            outer: host.outer.clone(),
            tap: tap.clone(),
            bridge: self.bridge.clone(),
        };
        sh(&["ip", "link", "set", &port, "master", &self.bridge]);
        sh(&["ip", "link", "set", &port, "up"]);
        sh(&["ip", "link", "set", &tap, "up"]);
        sh(&["ip", "link", "set", &host.outer, "nomaster"]);
        let (from_host, to_bridge) = (PacketSocket::bind(&host.outer), PacketSocket::bind(&tap));
        for (from, to, delay, loss) in [
            (from_host.clone(), to_bridge.clone(), delay, loss),
            (to_bridge, from_host, Duration::ZERO, 0.0),
        ] {
            let stop = impairment.stop.clone();
            impairment.pumps.push(std::thread::spawn(move || {
                pump(&from, &to, delay, loss, &stop)
            }));
        }
        impairment
    }

    /// The processes running in the host's namespace.
    pub fn pids(&self, name: &str) -> Vec<i32> {
        let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.host(name).ns])
            .output()
        else {
            return Vec::new();
        };
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// SIGKILL to every process of the host (a power cut, as far as its processes can tell).
    pub fn kill_host(&self, name: &str) {
        for _ in 0..20 {
            let pids = self.pids(name);
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                // SAFETY: kill(2) with a pid and a valid signal number.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!(
            "processes of {name} survived SIGKILL: {:?}",
            self.pids(name)
        );
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for host in &self.hosts {
            for pid in self.pids(&host.name) {
                // SAFETY: as in kill_host.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            let _ = Command::new("ip").args(["netns", "del", &host.ns]).output();
            let _ = Command::new("ip")
                .args(["link", "del", &host.outer])
                .output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

/// Latency and loss on a host's link while it lives (see [`Network::impair`]).
pub struct Impairment {
    stop: Arc<AtomicBool>,
    pumps: Vec<JoinHandle<()>>,
    outer: String,
    tap: String,
    bridge: String,
}

impl Drop for Impairment {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for pump in self.pumps.drain(..) {
            let _ = pump.join();
        }
        let _ = Command::new("ip")
            .args(["link", "set", &self.outer, "master", &self.bridge])
            .output();
        let _ = Command::new("ip").args(["link", "del", &self.tap]).output();
    }
}

/// A raw socket on one interface, frames with their virtio-net header (PACKET_VNET_HDR), so
/// that checksum and segmentation offload travel with them; its own sends not read back.
#[derive(Clone)]
struct PacketSocket(Arc<OwnedFd>);

impl PacketSocket {
    fn bind(interface: &str) -> PacketSocket {
        const PACKET_VNET_HDR: libc::c_int = 15;
        const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
        let all = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket calls on a descriptor this function owns; every pointer passed
        // points at a live local of the size given.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, libc::c_int::from(all));
            assert!(
                fd >= 0,
                "AF_PACKET socket: {}",
                std::io::Error::last_os_error()
            );
            let fd = OwnedFd::from_raw_fd(fd);
            let one: libc::c_int = 1;
            for option in [PACKET_VNET_HDR, PACKET_IGNORE_OUTGOING] {
                let r = libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_PACKET,
                    option,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as u32,
                );
                assert_eq!(
                    r,
                    0,
                    "packet option {option}: {}",
                    std::io::Error::last_os_error()
                );
            }
            let timeout = libc::timeval {
                tv_sec: 0,
                tv_usec: 2000,
            };
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            );
            let name = std::ffi::CString::new(interface).unwrap();
            let mut address: libc::sockaddr_ll = std::mem::zeroed();
            address.sll_family = libc::AF_PACKET as u16;
            address.sll_protocol = all;
            address.sll_ifindex = libc::if_nametoindex(name.as_ptr()) as i32;
            assert!(address.sll_ifindex > 0, "no interface {interface}");
            let r = libc::bind(
                fd.as_raw_fd(),
                (&address as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            assert_eq!(
                r,
                0,
                "bind to {interface}: {}",
                std::io::Error::last_os_error()
            );
            PacketSocket(Arc::new(fd))
        }
    }

    /// The next frame, or None after a couple of milliseconds without one.
    fn receive(&self, buffer: &mut [u8]) -> Option<usize> {
        // SAFETY: `buffer` is writable for its whole length.
        let n = unsafe {
            libc::recv(
                self.0.as_raw_fd(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                0,
            )
        };
        usize::try_from(n).ok().filter(|n| *n > 0)
    }

    fn send(&self, frame: &[u8]) {
        // SAFETY: `frame` is readable for its whole length. A frame the interface refuses is
        // dropped, as a wire would.
        unsafe { libc::send(self.0.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
    }
}

/// Moves frames from `from` to `to`, each `delay` late, a `loss` fraction of them dropped.
fn pump(from: &PacketSocket, to: &PacketSocket, delay: Duration, loss: f64, stop: &AtomicBool) {
    use rand::Rng as _;
    let mut rng = rand::rng();
    let mut buffer = vec![0u8; 128 * 1024];
    let mut queue: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    while !stop.load(Ordering::Relaxed) {
        if let Some(n) = from.receive(&mut buffer) {
            if loss == 0.0 || rng.random::<f64>() >= loss {
                queue.push_back((Instant::now() + delay, buffer[..n].to_vec()));
            }
        }
        let now = Instant::now();
        while queue.front().is_some_and(|(due, _)| *due <= now) {
            if let Some((_, frame)) = queue.pop_front() {
                to.send(&frame);
            }
        }
    }
}
