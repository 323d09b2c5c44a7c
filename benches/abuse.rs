//! One LAN host against the resolver (release build, loopback only, every loop bounded):
//! malformed datagrams, a TCP connection flood, slowloris, and a client far over its rate
//! limit, each while a probe on another address keeps asking a cache-miss name, a blocked
//! name and a cached name over UDP and TCP. Prints, per phase, what was sent, what the
//! probe lost, the daemon's RSS before and after and its descriptor count at the peak.
//!
//! Run: `cargo bench --bench abuse` (without --bench, a short smoke run). The upstream is
//! a stub in this process that answers every A query with 192.0.2.1, TTL 0, so a miss
//! stays a miss.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// The upstream: every A query gets 192.0.2.1 with TTL 0.
fn stub_upstream() -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            if n < 17 {
                continue;
            }
            // The header and the question only (the query's EDNS record is dropped).
            let mut end = 12;
            while end < n && buf[end] != 0 {
                end += 1 + buf[end] as usize;
            }
            if end + 5 > n {
                continue;
            }
            let mut r = buf[..end + 5].to_vec();
            r[2] |= 0x80;
            r[3] = 0x80;
            r[6..12].copy_from_slice(&[0, 1, 0, 0, 0, 0]);
            r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 192, 0, 2, 1]);
            let _ = sock.send_to(&r, from);
        }
    });
    addr
}

/// A TCP connection from a chosen loopback address.
fn connect_from(from: IpAddr, to: SocketAddr) -> Option<TcpStream> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
    s.bind(&SocketAddr::new(from, 0).into()).ok()?;
    s.connect_timeout(&to.into(), Duration::from_secs(1)).ok()?;
    Some(s.into())
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn udp_ask(server: SocketAddr, from: IpAddr, name: &str) -> bool {
    let Ok(s) = UdpSocket::bind(SocketAddr::new(from, 0)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.send_to(&query(7, name), server);
    let mut buf = [0u8; 1500];
    matches!(s.recv(&mut buf), Ok(n) if n > 12 && buf[3] & 0x0f == 0)
}

fn tcp_ask(server: SocketAddr, name: &str) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&server, Duration::from_secs(2)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let q = query(9, name);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    if s.write_all(&framed).is_err() {
        return false;
    }
    let mut buf = [0u8; 1500];
    use std::io::Read;
    matches!(s.read(&mut buf), Ok(n) if n > 14 && buf[5] & 0x0f == 0)
}

/// The probe: six queries a round from 127.0.0.1 until stopped; counts asked and lost,
/// and samples the daemon's descriptor count.
struct Probe {
    asked: AtomicUsize,
    lost: AtomicUsize,
    peak_fds: AtomicUsize,
    stop: AtomicBool,
}

fn probe(udp: SocketAddr, tcp: SocketAddr, pid: u32, p: Arc<Probe>) {
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    let mut round = 0u64;
    while !p.stop.load(Ordering::Relaxed) {
        round += 1;
        let results = [
            udp_ask(udp, lo, &format!("miss{round}.probe.example")),
            udp_ask(udp, lo, "telemetry.example.com"),
            udp_ask(udp, lo, "cached.probe.example"),
            tcp_ask(tcp, &format!("tcpmiss{round}.probe.example")),
            tcp_ask(tcp, "telemetry.example.com"),
            tcp_ask(tcp, "cached.probe.example"),
        ];
        p.asked.fetch_add(results.len(), Ordering::Relaxed);
        p.lost
            .fetch_add(results.iter().filter(|ok| !**ok).count(), Ordering::Relaxed);
        p.peak_fds.fetch_max(fds(pid), Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn phase(name: &str, pid: u32, udp: SocketAddr, tcp: SocketAddr, attack: impl FnOnce() -> String) {
    let p = Arc::new(Probe {
        asked: AtomicUsize::new(0),
        lost: AtomicUsize::new(0),
        peak_fds: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
    });
    let rss_before = rss_mib(pid);
    let prober = {
        let p = p.clone();
        std::thread::spawn(move || probe(udp, tcp, pid, p))
    };
    let started = Instant::now();
    let sent = attack();
    let secs = started.elapsed().as_secs_f64();
    // A second of probing after the attack, to see that nothing is left over.
    std::thread::sleep(Duration::from_secs(1));
    p.stop.store(true, Ordering::Relaxed);
    let _ = prober.join();
    println!(
        "| {name} | {sent} in {secs:.1} s | {} of {} | {rss_before:.1} -> {:.1} MiB | {} |",
        p.lost.load(Ordering::Relaxed),
        p.asked.load(Ordering::Relaxed),
        rss_mib(pid),
        p.peak_fds.load(Ordering::Relaxed),
    );
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let scale = if full { 1 } else { 10 };
    let dir = std::env::temp_dir().join(format!("telesink-bench-abuse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("t.domains"), "telemetry.example.com\n").unwrap();
    let upstream = stub_upstream();
    std::fs::write(
        dir.join("t.toml"),
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n[upstream]\nservers = [\"{upstream}\"]\n[cache]\nmin_ttl_secs = 0\n[policy]\nlists_dir = \".\"\n[profiles.t]\nenabled = true\nlists = [\"t.domains\"]\n[control]\nsocket = \"{d}/c.sock\"\nstate_file = \"{d}/state.json\"\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_telesink"))
        .args(["run", "--config"])
        .arg(dir.join("t.toml"))
        .env("TELESINK_LOG", "warn,telesink::daemon=info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start telesink");
    let pid = child.id();
    let (mut udp, mut tcp) = (None, None);
    let mut budget = String::new();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    for line in lines.by_ref().map_while(Result::ok) {
        if let Some(a) = line.split("listening on udp ").nth(1) {
            udp = a.trim().parse::<SocketAddr>().ok();
        }
        if let Some(a) = line.split("listening on tcp ").nth(1) {
            tcp = a.trim().parse::<SocketAddr>().ok();
        }
        if let Some(b) = line.split("descriptor budget: ").nth(1) {
            budget = b.to_owned();
        }
        if line.ends_with("ready") {
            break;
        }
    }
    // Keep reading the log so the daemon never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let (udp, tcp) = (udp.expect("udp port"), tcp.expect("tcp port"));
    let _ = udp_ask(udp, "127.0.0.1".parse().unwrap(), "cached.probe.example");
    println!(
        "# Abuse: one host against the resolver{}\n",
        if full { "" } else { " (smoke run)" }
    );
    println!("descriptor budget: {budget}\n");
    println!("| attack | sent | probe lost | RSS before -> after | descriptors at peak |");
    println!("|---|---|---|---|---|");

    phase("malformed datagrams", pid, udp, tcp, || {
        let s = UdpSocket::bind("127.0.0.2:0").unwrap();
        let n = 1_000_000 / scale;
        let mut x = 0x9e3779b97f4a7c15u64;
        let mut buf = [0u8; 64];
        for i in 0..n {
            for b in buf.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            buf[2] &= 0x7f;
            let _ = s.send_to(&buf[..12 + i % 52], udp);
        }
        format!("{n} datagrams")
    });

    phase("TCP connection flood", pid, udp, tcp, || {
        let mut held = Vec::new();
        let per = 3000 / scale;
        for host in 0..4u8 {
            for _ in 0..per / 4 {
                held.extend(connect_from(IpAddr::from([127, 0, 1, host + 1]), tcp));
            }
        }
        std::thread::sleep(Duration::from_secs(3));
        format!(
            "{per} idle connections from 4 addresses ({} connected), held 3 s",
            held.len()
        )
    });

    phase("slowloris", pid, udp, tcp, move || {
        let n = 500 / scale;
        let rounds = if full { 20 } else { 4 };
        let mut conns: Vec<TcpStream> = (0..n)
            .filter_map(|_| connect_from(IpAddr::from([127, 0, 0, 4]), tcp))
            .collect();
        // One byte of a 200-byte message every 500 ms, for 10 s (2 s in the smoke run).
        for _ in 0..rounds {
            for c in &mut conns {
                let _ = c.write_all(&[0]);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        format!(
            "{n} connections, a byte each every 500 ms for {} s",
            rounds / 2
        )
    });

    phase("client over its rate limit", pid, udp, tcp, || {
        let s = UdpSocket::bind("127.0.0.5:0").unwrap();
        let n = 300_000 / scale;
        let answered = Arc::new(AtomicU64::new(0));
        let reader = {
            let s = s.try_clone().unwrap();
            let answered = answered.clone();
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            std::thread::spawn(move || {
                let mut buf = [0u8; 1500];
                while s.recv(&mut buf).is_ok() {
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        for i in 0..n {
            let _ = s.send_to(&query(i as u16, "telemetry.example.com"), udp);
        }
        let _ = reader.join();
        format!("{n} queries, {} answered", answered.load(Ordering::Relaxed))
    });

    let _ = Command::new("kill").arg(pid.to_string()).status();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
