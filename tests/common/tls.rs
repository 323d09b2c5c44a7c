//! Encrypted upstreams for the tests: a test CA made in the test (rcgen), unbound as a
//! real DoT and DoH server forwarding to knotd, and a DoT server of our own that can
//! misbehave on purpose (answer out of order, stall, hang up, show an expired
//! certificate, claim AD).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

use super::{TempDir, free_port};

/// The name every test server's certificate carries.
pub const SERVER_NAME: &str = "dns.test";

/// A CA and server certificates signed by it, as PEM files.
pub struct Pki {
    pub dir: TempDir,
    pub ca_file: PathBuf,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

pub struct Issued {
    /// base64 of the SHA-256 of the certificate's SubjectPublicKeyInfo (its SPKI pin).
    pub pin: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = TempDir::new("pki");
        let ca_key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "telesink test CA");
        let ca = params.self_signed(&ca_key).expect("CA cert");
        let ca_file = dir.write("ca.pem", &ca.pem());
        Pki {
            dir,
            ca_file,
            ca,
            ca_key,
        }
    }

    /// A server certificate for `name`; `expired` makes one that ended in 2021.
    pub fn issue(&self, tag: &str, name: &str, expired: bool) -> Issued {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec![name.to_owned()]).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = params
            .signed_by(&key, &self.ca, &self.ca_key)
            .expect("sign");
        let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
        let pin = {
            use base64::Engine;
            use sha2::Digest;
            base64::engine::general_purpose::STANDARD
                .encode(sha2::Sha256::digest(key.public_key_der()))
        };
        Issued {
            pin,
            cert: self.dir.write(&format!("{tag}.pem"), &cert_pem),
            key: self.dir.write(&format!("{tag}.key"), &key_pem),
            cert_pem,
            key_pem,
        }
    }
}

/// unbound serving DNS over TLS and over HTTPS on loopback, forwarding to `upstream`.
pub struct Unbound {
    child: Child,
    pub tls: SocketAddr,
    pub https: SocketAddr,
    _dir: TempDir,
}

impl Unbound {
    pub fn start(issued: &Issued, upstream: SocketAddr) -> Unbound {
        let dir = TempDir::new("unbound");
        let (tls, https) = (free_port(), free_port());
        let conf = unbound_conf(issued, dir.path(), tls, https, upstream);
        let path = dir.write("unbound.conf", &conf);
        let child = Command::new("unbound")
            .arg("-d")
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start unbound");
        let u = Unbound {
            child,
            tls: format!("127.0.0.1:{tls}").parse().expect("addr"),
            https: format!("127.0.0.1:{https}").parse().expect("addr"),
            _dir: dir,
        };
        wait_listening(&[u.tls, u.https]);
        u
    }

    /// Stops it (a server that goes away); its ports stay closed afterwards.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Unbound {
    fn drop(&mut self) {
        self.stop();
    }
}

/// unbound's config: DoT on `tls`, DoH on `https` (127.0.0.1), forwarding everything
/// to `upstream`, no validation, `test.` not one of its built-in empty zones.
pub fn unbound_conf(
    issued: &Issued,
    dir: &std::path::Path,
    tls: u16,
    https: u16,
    upstream: SocketAddr,
) -> String {
    format!(
        "server:\n  verbosity: 0\n  interface: 127.0.0.1@{tls}\n  interface: 127.0.0.1@{https}\n  tls-port: {tls}\n  https-port: {https}\n  tls-service-key: \"{key}\"\n  tls-service-pem: \"{pem}\"\n  http-endpoint: \"/dns-query\"\n  do-daemonize: no\n  username: \"\"\n  chroot: \"\"\n  directory: \"{d}\"\n  pidfile: \"\"\n  use-syslog: no\n  access-control: 127.0.0.0/8 allow\n  do-not-query-localhost: no\n  module-config: \"iterator\"\n  num-threads: 1\n  qname-minimisation: no\n  local-zone: \"test.\" nodefault\nremote-control:\n  control-enable: no\nforward-zone:\n  name: \".\"\n  forward-addr: {ip}@{port}\n",
        key = issued.key.display(),
        pem = issued.cert.display(),
        d = dir.display(),
        ip = upstream.ip(),
        port = upstream.port(),
    )
}

fn wait_listening(addrs: &[SocketAddr]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for a in addrs {
        while std::net::TcpStream::connect_timeout(a, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "nothing listens on {a}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// How the fixture DoT server behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Answers each query at once.
    Answer,
    /// Waits for up to 8 queries (or 300 ms) on a connection, then answers them last
    /// first.
    Reversed,
    /// Answers after this long.
    Slow(Duration),
    /// On each connection answers this many queries, then hangs up on the next one.
    HangUpAfter(usize),
}

/// What the fixture saw.
#[derive(Default)]
pub struct Seen {
    pub connections: AtomicUsize,
    pub queries: AtomicUsize,
    /// The largest batch answered in reverse order.
    pub reversed_batch: AtomicUsize,
    /// Queries whose length was a multiple of 128 (RFC 8467 padding).
    pub padded: AtomicUsize,
}

/// A DoT server of our own on loopback. Answers `qN.*` with 192.0.2.N (else
/// 192.0.2.77), and sets AD when the query asks for it (DO or AD).
pub struct Fixture {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Fixture {
    pub fn start(issued: &Issued, behaviour: Behaviour) -> Fixture {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = vec![CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).expect("cert")];
        let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).expect("key");
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
        config.alpn_protocols = vec![b"dot".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Seen::default());
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let seen2 = seen.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let serve = async {
                    loop {
                        let Ok((tcp, _)) = listener.accept().await else {
                            continue;
                        };
                        let (acceptor, seen) = (acceptor.clone(), seen2.clone());
                        tokio::spawn(async move {
                            if let Ok(tls) = acceptor.accept(tcp).await {
                                seen.connections.fetch_add(1, Ordering::SeqCst);
                                serve(tls, behaviour, seen).await;
                            }
                        });
                    }
                };
                tokio::select! {
                    () = serve => {}
                    _ = stopped => {}
                }
            });
        });
        Fixture {
            addr,
            seen,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// How telesink names it: `tls://ADDR#dns.test`.
    pub fn upstream(&self) -> String {
        format!("tls://{}#{SERVER_NAME}", self.addr)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve<S>(stream: S, behaviour: Behaviour, seen: Arc<Seen>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut answered = 0usize;
    let mut batch: Vec<Vec<u8>> = Vec::new();
    loop {
        let read = async {
            let mut len = [0u8; 2];
            rd.read_exact(&mut len).await?;
            let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
            rd.read_exact(&mut q).await?;
            Ok::<_, std::io::Error>(q)
        };
        let query = if behaviour == Behaviour::Reversed && !batch.is_empty() {
            tokio::time::timeout(Duration::from_millis(300), read)
                .await
                .ok()
        } else {
            Some(read.await)
        };
        match query {
            Some(Ok(q)) => {
                seen.queries.fetch_add(1, Ordering::SeqCst);
                if q.len() % 128 == 0 {
                    seen.padded.fetch_add(1, Ordering::SeqCst);
                }
                match behaviour {
                    Behaviour::HangUpAfter(n) if answered >= n => return,
                    Behaviour::Reversed => {
                        batch.push(q);
                        if batch.len() < 8 {
                            continue;
                        }
                    }
                    Behaviour::Slow(d) => {
                        tokio::time::sleep(d).await;
                        batch.push(q);
                    }
                    _ => batch.push(q),
                }
            }
            Some(Err(_)) => return,
            None => {}
        }
        if batch.len() > 1 {
            seen.reversed_batch.fetch_max(batch.len(), Ordering::SeqCst);
        }
        let mut out = Vec::new();
        while let Some(q) = batch.pop() {
            let a = answer(&q);
            out.extend_from_slice(&(a.len() as u16).to_be_bytes());
            out.extend_from_slice(&a);
            answered += 1;
        }
        if wr.write_all(&out).await.is_err() || wr.flush().await.is_err() {
            return;
        }
    }
}

fn answer(query: &[u8]) -> Vec<u8> {
    let Ok(q) = Message::from_vec(query) else {
        return Vec::new();
    };
    let mut m = Message::new(q.metadata.id, MessageType::Response, q.metadata.op_code);
    m.metadata.recursion_desired = true;
    m.metadata.recursion_available = true;
    let wants_ad =
        q.metadata.authentic_data || q.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
    m.metadata.authentic_data = wants_ad;
    if let Some(question) = q.queries.first() {
        let first = question.name().iter().next().unwrap_or_default();
        let n = std::str::from_utf8(first)
            .ok()
            .and_then(|l| l.strip_prefix('q'))
            .and_then(|d| d.parse::<u8>().ok())
            .unwrap_or(77);
        m.add_query(question.clone());
        m.add_answer(Record::from_rdata(
            question.name().clone(),
            60,
            RData::A(A::new(192, 0, 2, n)),
        ));
    }
    m.to_vec().unwrap_or_default()
}
