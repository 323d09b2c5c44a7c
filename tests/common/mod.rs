//! Test harness: a real knotd upstream on loopback, the real telesink binary on ephemeral
//! ports, and a DNS client built on hickory-proto that can send from any 127.x address.
#![allow(dead_code)]

pub mod control;
pub mod fleet;
pub mod netns;
pub mod site;
pub mod tls;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::EdnsOption;
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// Whether skipping is an error: in CI (CI=true) and under the README's test command
/// (`.ci/test` sets TELESINK_TESTS=strict), where everything a test needs is installed
/// and the run is root. A plain `cargo test` as a normal user may skip, loudly.
pub fn strict() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
        || std::env::var("TELESINK_TESTS").as_deref() == Ok("strict")
}

/// Records a skipped test (printed now, and summed up by `.ci/test --allow-skips` at the
/// end of the run), or fails it when skipping is not allowed.
pub fn skip(why: &str) {
    if strict() {
        panic!("{why} (this run does not allow skipped tests)");
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("unknown test")
        .to_owned();
    eprintln!("\n!!!!! SKIPPED {test}: {why} !!!!!\n");
    let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join("skipped-tests.log");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        let _ = writeln!(f, "{test}: {why}");
    }
}

/// Whether a required external tool exists; a missing one skips the test (see `skip`).
pub fn require(tool: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !found {
        skip(&format!(
            "{tool} is not installed; the README's test command installs it"
        ));
    }
    found
}

/// Makes a file or folder immutable (`chattr +i`) until dropped, so a failing test never leaves one behind.
pub struct Immutable(PathBuf);

impl Immutable {
    pub fn set(path: &Path) -> Immutable {
        let ok = Command::new("chattr").arg("+i").arg(path).status().unwrap();
        assert!(ok.success(), "chattr +i {}", path.display());
        Immutable(path.to_owned())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("telesink-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&p, text).expect("write");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.0.as_os_str().is_empty() {
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port for a fixture (knotd, Prometheus, a dead upstream) that is free for TCP and
/// UDP. Taken below the kernel's ephemeral range (32768 and up by default): a port the
/// kernel hands out for port 0, as telesink's own listeners and every outgoing socket of
/// a test running beside this one get, cannot land on it between this check and the
/// fixture's bind. Each call in a process gets a new port.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    const FIRST: u16 = 20_000;
    const SPAN: u16 = 12_000;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = (std::process::id() % u32::from(SPAN)) as u16;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FIRST + (start.wrapping_add(n) % SPAN);
        let free = std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok();
        if free {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + SPAN);
}

/// The test zone every resolver test forwards to.
pub const ZONE: &str = r#"$ORIGIN test.
$TTL 300
@        SOA ns.test. hostmaster.test. 1 3600 600 86400 120
@        NS  ns
ns       A   127.0.0.1
www      A   192.0.2.10
www      AAAA 2001:db8::10
www      MX  10 mail.test.
alias    CNAME www
chain    CNAME alias
cloak    CNAME tracker.blocked.test.
deep     CNAME cloak
tracker.blocked A 192.0.2.66
shared   A   192.0.2.20
nodata   TXT "only txt here"
"#;

pub struct Knot {
    child: Child,
    pub addr: SocketAddr,
    _dir: TempDir,
}

/// A root zone whose wildcard answers every name: whatever telesink forwards resolves to
/// 203.0.113.1, so a test can tell "forwarded" from "sinkholed" for any real-world name.
pub const ROOT_WILDCARD: &str = "$ORIGIN .\n$TTL 300\n@ SOA ns.test. hostmaster.test. 1 3600 600 86400 120\n@ NS ns.test.\n* A 203.0.113.1\n* AAAA 2001:db8::1\n";

impl Knot {
    pub fn start(extra_records: &str) -> Knot {
        let mut zone = ZONE.to_owned();
        zone.push_str(extra_records);
        Self::start_zones(&[("test", &zone)])
    }

    /// Serves each (origin, zone text); origin "." is the root.
    pub fn start_zones(zones: &[(&str, &str)]) -> Knot {
        Self::start_zones_signed(zones, false)
    }

    /// As `start_zones`; with `signed`, knotd signs every zone (DNSSEC, its default
    /// policy: RRSIGs, NSEC, DNSKEY) with keys it makes itself.
    pub fn start_zones_signed(zones: &[(&str, &str)], signed: bool) -> Knot {
        let dir = TempDir::new("knot");
        let port = free_port();
        let mut conf = format!(
            "server:\n    listen: 127.0.0.1@{port}\n    rundir: {d}\ndatabase:\n    storage: {d}/db\nlog:\n  - target: stderr\n    any: warning\nzone:\n",
            d = dir.path().display(),
        );
        for (i, (origin, text)) in zones.iter().enumerate() {
            let zone_path = dir.write(&format!("z{i}.zone"), text);
            conf.push_str(&format!(
                "  - domain: \"{origin}\"\n    file: {}\n",
                zone_path.display()
            ));
            if signed {
                conf.push_str("    dnssec-signing: on\n");
            }
        }
        // knotd keeps its timers and, for signed zones, its keys here; it does not make
        // the folder itself.
        let _ = std::fs::create_dir_all(dir.path().join("db"));
        let conf_path = dir.write("knot.conf", &conf);
        let child = Command::new("knotd")
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start knotd");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let knot = Knot {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let lo = "127.0.0.1".parse().unwrap();
            if udp_query(addr, lo, "ns.test.", RecordType::SOA, false).is_ok_and(|m| {
                m.metadata.response_code != ResponseCode::ServFail
                    && m.metadata.response_code != ResponseCode::Refused
            }) {
                return knot;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("knotd did not come up on {addr}");
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The real telesink binary, started with a config and torn down (with its log printed)
/// when dropped.
pub struct Telesink {
    child: Child,
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    pub log: Arc<Mutex<String>>,
    pub dir: TempDir,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_telesink")
}

impl Telesink {
    /// `config` is written to telesink.toml in a fresh folder; `files` beside it.
    pub fn start(config: &str, files: &[(&str, &str)]) -> Telesink {
        let dir = TempDir::new("ts");
        for (name, text) in files {
            dir.write(name, text);
        }
        let cfg = dir.write("telesink.toml", config);
        Self::start_with(dir, &cfg, &[])
    }

    pub fn start_with(dir: TempDir, cfg: &Path, args: &[&str]) -> Telesink {
        Self::start_env(dir, cfg, args, &[])
    }

    pub fn start_env(dir: TempDir, cfg: &Path, args: &[&str], env: &[(&str, &str)]) -> Telesink {
        Self::start_under(&[], dir, cfg, args, env)
    }

    /// Started through `prefix` (e.g. `prlimit --nofile=1024:1024 --`), which execs it.
    pub fn start_under(
        prefix: &[&str],
        dir: TempDir,
        cfg: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Telesink {
        let mut command = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        let mut child = command
            .arg("run")
            .arg("--config")
            .arg(cfg)
            .args(args)
            .env(
                "TELESINK_LOG",
                "info,hickory_server=warn,hickory_resolver=warn,hickory_net=warn",
            )
            .env("NO_COLOR", "1")
            // The control socket and state file default to systemd's folders, else
            // /run and /var/lib: keep every test's in its own folder.
            .env("RUNTIME_DIRECTORY", dir.path())
            .env("STATE_DIRECTORY", dir.path())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start telesink");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log2.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_str(&format!("{line}\n"));
                if tx.as_ref().is_some_and(|t| t.send(line.clone()).is_err()) {
                    tx = None;
                }
            }
        });
        let (mut udp, mut tcp) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(a) = line.split("listening on udp ").nth(1) {
                        udp = udp.or(a.trim().parse().ok());
                    }
                    if let Some(a) = line.split("listening on tcp ").nth(1) {
                        tcp = tcp.or(a.trim().parse().ok());
                    }
                    if line.ends_with("ready") {
                        break;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!("telesink did not become ready:\n{}", log.lock().unwrap());
                }
            }
        }
        Telesink {
            child,
            udp: udp.expect("udp port"),
            tcp: tcp.expect("tcp port"),
            log,
            dir,
        }
    }

    /// Stops the daemon with SIGTERM and hands back its folder, for a restart on the
    /// same config and state.
    pub fn stop(mut self) -> TempDir {
        self.signal("TERM");
        let _ = self.child.wait();
        std::mem::replace(&mut self.dir, TempDir(PathBuf::new()))
    }

    /// Runs a control command (`status`, `profile ...`) against this daemon's socket:
    /// (success, stdout, stderr).
    pub fn ctl(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(bin())
            .args(args)
            .arg("--socket")
            .arg(self.dir.path().join("control.sock"))
            .output()
            .expect("run telesink");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Where the metrics endpoint listens (started with `--metrics 127.0.0.1:0`).
    pub fn metrics_addr(&self) -> SocketAddr {
        self.log_text()
            .lines()
            .find_map(|l| l.split("metrics listening on ").nth(1)?.trim().parse().ok())
            .expect("metrics address in the log")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// The log so far. A copy, and read even when a panic poisoned the lock: an
    /// assertion whose message reads the log must not turn the test's failure into an
    /// abort of the whole test binary (a panic in `Drop` while unwinding).
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log_text().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn q(&self, name: &str, qtype: RecordType) -> Message {
        self.q_from("127.0.0.1", name, qtype)
    }

    pub fn q_from(&self, from: &str, name: &str, qtype: RecordType) -> Message {
        udp_query(self.udp, from.parse().unwrap(), name, qtype, true).expect("query")
    }
}

impl Drop for Telesink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- telesink log ----\n{}", self.log_text());
        }
    }
}

pub fn query_message(name: &str, qtype: RecordType, edns: bool) -> Message {
    let mut m = Message::query();
    m.metadata.id = rand_id();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
    }
    m
}

fn rand_id() -> u16 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (t.subsec_nanos() ^ std::process::id()) as u16
}

pub fn udp_query(
    server: SocketAddr,
    from: IpAddr,
    name: &str,
    qtype: RecordType,
    edns: bool,
) -> std::io::Result<Message> {
    let m = query_message(name, qtype, edns);
    let reply = udp_raw(server, from, &m.to_vec().expect("encode"))?;
    Message::from_vec(&reply).map_err(|e| std::io::Error::other(e.to_string()))
}

pub fn udp_raw(server: SocketAddr, from: IpAddr, packet: &[u8]) -> std::io::Result<Vec<u8>> {
    let sock = UdpSocket::bind(SocketAddr::new(from, 0))?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    sock.send_to(packet, server)?;
    let mut buf = vec![0u8; 65535];
    let (n, _) = sock.recv_from(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

pub fn tcp_query(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let m = query_message(name, qtype, true);
    let bytes = m.to_vec().expect("encode");
    let mut s = TcpStream::connect(server).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&(bytes.len() as u16).to_be_bytes()).unwrap();
    s.write_all(&bytes).unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).unwrap();
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).unwrap();
    Message::from_vec(&buf).expect("decode")
}

/// The addresses in the answer section.
pub fn addrs(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

pub fn soa_of(m: &Message) -> Option<&Record> {
    m.authorities
        .iter()
        .find(|r| r.record_type() == RecordType::SOA)
}

/// The Extended DNS Error (code, text) of a response, if any.
pub fn ede(m: &Message) -> Option<(u16, String)> {
    let edns = m.edns.as_ref()?;
    edns.options()
        .as_ref()
        .iter()
        .find_map(|(code, opt)| match opt {
            EdnsOption::Unknown(15, data) if u16::from(*code) == 15 && data.len() >= 2 => Some((
                u16::from_be_bytes([data[0], data[1]]),
                String::from_utf8_lossy(&data[2..]).into_owned(),
            )),
            _ => None,
        })
}

/// Runs `telesink check` and returns (exit ok, stderr+stdout).
pub fn check(cfg: &Path) -> (bool, String) {
    let out = Command::new(bin())
        .arg("check")
        .arg("--config")
        .arg(cfg)
        .output()
        .expect("run check");
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stdout));
    (out.status.success(), text)
}

/// `check` refuses each config text and says the words given with it.
pub fn check_refuses(dir: &TempDir, cases: &[(String, &str)]) {
    for (text, says) in cases {
        let cfg = dir.write("telesink.toml", text);
        let (ok, out) = check(&cfg);
        assert!(!ok && out.contains(says), "{text}\n{out}");
    }
}

/// GET over HTTP/1.1: (status, body).
pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The value of one series (name and labels as written) in an exposition.
pub fn value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// A command's standard output then its standard error, as text.
pub fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs a command with `input` on its standard input; its output and error are captured.
pub fn with_stdin(mut command: Command, input: &[u8]) -> std::process::Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write to stdin");
    child.wait_with_output().expect("wait")
}
