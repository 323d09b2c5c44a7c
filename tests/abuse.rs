//! One LAN host must not be able to take the resolver from the others: idle TCP
//! connections are bounded (in all and per client, longest idle closed first) within a
//! descriptor budget derived at start, and a client over its query rate is limited while
//! the others are not. Real binary, real sockets on loopback, knotd upstream.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

const LIST: &str = "telemetry.example.com\n";

fn config(knot: &Knot, metrics: u16, extra: &str) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
udp_threads = 2
{extra}
[upstream]
servers = ["{}"]
[policy]
lists_dir = "."
[metrics]
listen = "127.0.0.1:{metrics}"
[profiles.t]
enabled = true
lists = ["t.domains"]
"#,
        knot.addr
    )
}

/// This test process holds thousands of sockets: the soft descriptor limit up to the hard.
fn raise_own_fd_limit(want: u64) -> bool {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return false;
    };
    hard >= want && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok()
}

/// One DNS-over-TCP query on a new connection from `from`.
fn tcp_query_from(server: SocketAddr, from: IpAddr, name: &str) -> std::io::Result<Message> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(from, 0).into())?;
    socket.connect_timeout(&server.into(), Duration::from_secs(3))?;
    let mut s: TcpStream = socket.into();
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    let bytes = query_message(name, RecordType::A, true)
        .to_vec()
        .expect("encode");
    s.write_all(&(bytes.len() as u16).to_be_bytes())?;
    s.write_all(&bytes)?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len)?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf)?;
    Message::from_vec(&buf).map_err(|e| std::io::Error::other(e.to_string()))
}

/// Opens `n` connections from `from` that never send anything; failures are counted,
/// not fatal (the server closes the ones it evicts).
fn idle_connections(server: SocketAddr, from: IpAddr, n: usize) -> (Vec<TcpStream>, usize) {
    let mut held = Vec::with_capacity(n);
    let mut failed = 0;
    for _ in 0..n {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).and_then(
            |s| {
                s.bind(&SocketAddr::new(from, 0).into())?;
                s.connect_timeout(&server.into(), Duration::from_secs(2))?;
                Ok(s)
            },
        );
        match s {
            Ok(s) => held.push(s.into()),
            Err(_) => failed += 1,
        }
    }
    (held, failed)
}

#[test]
fn idle_tcp_connections_from_one_host_cannot_take_the_resolver() {
    if !require("knotd") || !require("prlimit") {
        return;
    }
    if !raise_own_fd_limit(8192) {
        skip("the hard descriptor limit is below 8,192; this test holds 3,000 sockets");
        return;
    }
    let knot = Knot::start_zones(&[(".", ROOT_WILDCARD)]);
    let metrics = free_port();
    let dir = TempDir::new("abuse-tcp");
    dir.write("t.domains", LIST);
    let cfg = dir.write("telesink.toml", &config(&knot, metrics, ""));
    // The descriptor limit telesink had under systemd before its unit set LimitNOFILE.
    let ts = Telesink::start_under(
        &["prlimit", "--nofile=1024:1024", "--"],
        dir,
        &cfg,
        &[],
        &[],
    );
    assert!(
        ts.wait_log("descriptor budget: limit 1024", Duration::from_secs(2)),
        "the budget is logged at start"
    );
    let metrics: SocketAddr = format!("127.0.0.1:{metrics}").parse().unwrap();
    let server = ts.tcp;
    let lo: IpAddr = "127.0.0.1".parse().unwrap();

    // The attack runs beside the probe: 2,000 idle connections from one address, then
    // 1,000 from 50 others (20 each), all held open until the probe is done.
    let attack = std::thread::spawn(move || {
        let mut held = Vec::new();
        let (conns, _) = idle_connections(server, "127.0.0.2".parse().unwrap(), 2000);
        held.extend(conns);
        for host in 1..=50u8 {
            let (conns, _) = idle_connections(server, IpAddr::from([127, 0, 3, host]), 20);
            held.extend(conns);
        }
        held
    });

    let mut rounds = 0;
    let mut failures = Vec::new();
    let started = Instant::now();
    let mut attack = Some(attack);
    let mut held = Vec::new();
    // Probe while the attack runs and for 20 rounds after it has all its connections.
    let mut after = 0;
    while after < 20 && started.elapsed() < Duration::from_secs(120) {
        rounds += 1;
        let miss = format!("miss-{rounds}.example.org.");
        for (what, result) in [
            (
                "udp miss",
                udp_query(ts.udp, lo, &miss, RecordType::A, true),
            ),
            (
                "udp blocked",
                udp_query(ts.udp, lo, "telemetry.example.com.", RecordType::A, true),
            ),
            (
                "udp cached",
                udp_query(ts.udp, lo, "cached.example.org.", RecordType::A, true),
            ),
            (
                "tcp miss",
                tcp_query_from(server, lo, &format!("tcp-{miss}")),
            ),
            (
                "tcp blocked",
                tcp_query_from(server, lo, "telemetry.example.com."),
            ),
            (
                "tcp cached",
                tcp_query_from(server, lo, "cached.example.org."),
            ),
        ] {
            match result {
                Ok(m)
                    if m.metadata.response_code == ResponseCode::NoError
                        && !m.answers.is_empty() => {}
                Ok(m) => failures.push(format!("{what}: {:?}", m.metadata.response_code)),
                Err(e) => failures.push(format!("{what}: {e}")),
            }
        }
        if attack.as_ref().is_some_and(|a| a.is_finished()) {
            held = attack.take().unwrap().join().unwrap();
        }
        if attack.is_none() {
            after += 1;
        }
    }
    assert!(attack.is_none(), "the attack did not finish in time");
    assert!(
        failures.is_empty(),
        "the probe failed {} of {} queries: {failures:?}",
        failures.len(),
        rounds * 6
    );

    let (status, body) = get(metrics, "/metrics");
    assert_eq!(status, 200);
    let closed = |reason: &str| {
        value(
            &body,
            &format!(
                "telesink_connections_closed_total{{listener=\"dns-tcp\",reason=\"{reason}\"}}"
            ),
        )
        .unwrap_or(0.0)
    };
    // 127.0.0.2 was held at 32; the 50 others filled the rest and pushed out the oldest.
    assert!(closed("evicted_client_full") >= 1900.0, "{body}");
    assert!(closed("evicted_full") >= 1.0, "{body}");
    let max = value(&body, "telesink_connections_max{listener=\"dns-tcp\"}").unwrap();
    assert!(
        max < 1024.0 && max > 500.0,
        "the cap comes from the budget: {max}"
    );
    let fds = std::fs::read_dir(format!("/proc/{}/fd", ts.pid()))
        .unwrap()
        .count();
    assert!(fds < 1024, "telesink holds {fds} descriptors");
    drop(held);
}

#[test]
fn a_cap_that_does_not_fit_the_descriptor_limit_stops_the_start_with_the_fix() {
    if !require("prlimit") {
        return;
    }
    let dir = TempDir::new("abuse-budget");
    dir.write("t.domains", LIST);
    let cfg = dir.write(
        "telesink.toml",
        "[server]\nlisten = [\"127.0.0.1:0\"]\ntcp_max_connections = 5000\n[upstream]\nservers = [\"127.0.0.1:9\"]\n[policy]\nlists_dir = \".\"\n[profiles.t]\nenabled = true\nlists = [\"t.domains\"]\n",
    );
    let out = std::process::Command::new("prlimit")
        .args(["--nofile=1024:1024", "--"])
        .arg(bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .env("RUNTIME_DIRECTORY", dir.path())
        .env("STATE_DIRECTORY", dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        text.contains("tcp_max_connections = 5000 does not fit the descriptor limit: limit 1024"),
        "{text}"
    );
    assert!(text.contains("LimitNOFILE"), "{text}");
}

/// Sends `n` queries from `from` as fast as answers come (100 ms wait each): how many got
/// NOERROR, how many REFUSED with EDE 18, how many nothing.
fn burst(server: SocketAddr, from: &str, n: usize, tcp: bool) -> (usize, usize, usize) {
    let from: IpAddr = from.parse().unwrap();
    let sock = std::net::UdpSocket::bind(SocketAddr::new(from, 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let (mut ok, mut refused, mut silent) = (0, 0, 0);
    for i in 0..n {
        let reply = if tcp {
            tcp_query_from(server, from, "telemetry.example.com.").ok()
        } else {
            let mut m = query_message("telemetry.example.com.", RecordType::A, true);
            m.metadata.id = i as u16;
            sock.send_to(&m.to_vec().unwrap(), server).unwrap();
            let mut buf = [0u8; 1500];
            sock.recv(&mut buf)
                .ok()
                .and_then(|len| Message::from_vec(&buf[..len]).ok())
        };
        match reply {
            Some(m) if m.metadata.response_code == ResponseCode::NoError => ok += 1,
            Some(m)
                if m.metadata.response_code == ResponseCode::Refused
                    && ede(&m).is_some_and(|(code, text)| code == 18 && text.contains("rate")) =>
            {
                refused += 1
            }
            Some(m) => panic!("unexpected answer {m:?}"),
            None => silent += 1,
        }
    }
    (ok, refused, silent)
}

#[test]
fn a_client_over_its_rate_is_limited_while_another_is_not() {
    if !require("knotd") {
        return;
    }
    let knot = Knot::start("");
    let port = free_port();
    let ts = Telesink::start(
        &config(
            &knot,
            port,
            "[server.rate_limit]\nqueries_per_sec = 20\nburst = 50\naction = \"refuse\"\n",
        ),
        &[("t.domains", LIST)],
    );
    // A floods (the blocked name counts like any other); B asks at a normal pace beside it.
    let server = ts.udp;
    let flood = std::thread::spawn(move || burst(server, "127.0.0.2", 600, false));
    let mut b_ok = 0;
    for _ in 0..30 {
        b_ok += burst(ts.udp, "127.0.0.3", 1, false).0;
        std::thread::sleep(Duration::from_millis(50));
    }
    let (a_ok, a_refused, a_silent) = flood.join().unwrap();
    assert_eq!(b_ok, 30, "the other client is never limited");
    assert_eq!(a_silent, 0);
    assert!(
        a_refused > 300,
        "the flooding client is limited: {a_ok} ok, {a_refused} refused"
    );
    // Its burst, plus 20 a second for the time the flood took (well under 10 s).
    assert!((50..=50 + 20 * 10).contains(&a_ok), "{a_ok} answered");
    // Over TCP too, on its own connections: the bucket (at most 50 again by now) runs out.
    let tcp = burst(ts.tcp, "127.0.0.2", 120, true);
    let tcp_refused = tcp.1;
    assert!(tcp_refused >= 40 && tcp.0 + tcp.1 == 120, "{tcp:?}");
    // The gateway's own address is exempt by default.
    let (own_ok, _, _) = burst(ts.udp, "127.0.0.1", 200, false);
    assert_eq!(own_ok, 200);

    let (_, body) = get(format!("127.0.0.1:{port}").parse().unwrap(), "/metrics");
    let limited = value(
        &body,
        "telesink_dns_rate_limited_total{client=\"127.0.0.2\"}",
    )
    .unwrap();
    assert_eq!(limited as usize, a_refused + tcp_refused, "{body}");
    assert!(
        value(
            &body,
            "telesink_dns_rate_limited_total{client=\"127.0.0.3\"}"
        )
        .is_none()
    );
    assert_eq!(
        value(
            &body,
            "telesink_dns_queries_total{outcome=\"rate_limited\"}"
        )
        .unwrap() as usize,
        a_refused + tcp_refused
    );
    assert!(ts.wait_log("client over its query rate limit", Duration::from_secs(1)));
}

#[test]
fn dropping_is_silent_and_exemptions_name_inventory_hosts() {
    if !require("knotd") {
        return;
    }
    let knot = Knot::start("");
    let port = free_port();
    let ts = Telesink::start(
        &format!(
            "{}\n[[groups]]\nname = \"servers\"\nhosts = {{ backup = \"127.0.0.5\" }}\n",
            config(
                &knot,
                port,
                "[server.rate_limit]\nqueries_per_sec = 1\nburst = 10\nexempt = [\"backup\", \"127.0.4.0/24\"]\n",
            )
        ),
        &[("t.domains", LIST)],
    );
    let (ok, refused, silent) = burst(ts.udp, "127.0.0.2", 40, false);
    assert_eq!(refused, 0);
    assert!((10..=12).contains(&ok), "{ok} answered of 40");
    assert_eq!(ok + silent, 40);
    assert_eq!(
        burst(ts.udp, "127.0.0.5", 40, false).0,
        40,
        "inventory host exempt"
    );
    assert_eq!(
        burst(ts.udp, "127.0.4.9", 40, false).0,
        40,
        "exempt network"
    );
}

#[test]
fn check_refuses_an_exemption_that_names_nothing() {
    let dir = TempDir::new("abuse-check");
    dir.write("t.domains", LIST);
    let cfg = dir.write(
        "telesink.toml",
        "[server.rate_limit]\nexempt = [\"printer-hall\"]\n[policy]\nlists_dir = \".\"\n[profiles.t]\nenabled = true\nlists = [\"t.domains\"]\n",
    );
    let (ok, text) = check(&cfg);
    assert!(!ok);
    assert!(text.contains("telesink.toml:2"), "{text}");
    assert!(
        text.contains("\"printer-hall\" is neither an address"),
        "{text}"
    );
}
