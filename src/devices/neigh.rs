//! The kernel's neighbour table over rtnetlink: one dump at start, then every change as
//! the kernel announces it (RTNLGRP_NEIGH), on a thread of its own. Nothing here runs per
//! query; the pipeline never waits on netlink. Safe code only: nix's socket calls and
//! plain byte parsing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, send,
    setsockopt, socket, sockopt,
};

use super::registry::Registry;
use crate::policy::devices::Mac;

const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
/// RTNLGRP_NEIGH (3) as a legacy group bit.
const RTMGRP_NEIGH: u32 = 1 << 2;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
/// NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_PERMANENT: an entry whose
/// link-layer address the kernel has confirmed at some time (not INCOMPLETE or FAILED,
/// and not NOARP, the multicast and point-to-point entries).
const NUD_KNOWN: u16 = 0x02 | 0x04 | 0x08 | 0x10 | 0x80;

/// How the reader is doing, for status and /health.
#[derive(Default)]
pub struct NeighbourStats {
    /// Neighbour messages that named an address and a MAC.
    pub entries: AtomicU64,
    /// Times the kernel dropped notifications (the socket's buffer overflowed) and the
    /// table was dumped again.
    pub overflows: AtomicU64,
    /// The last error and when (Unix seconds); None while reading works.
    pub last_error: parking_lot::Mutex<Option<(u64, String)>>,
}

/// One neighbour entry as the kernel states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub ip: IpAddr,
    pub mac: Mac,
}

/// Starts the reader thread; it runs for the life of the process, starting over (with a
/// new dump) after an error or an overflow.
pub fn spawn(registry: Arc<Registry>, stats: Arc<NeighbourStats>) {
    let status = stats.clone();
    let started = std::thread::Builder::new()
        .name("telesink-neigh".into())
        .spawn(move || {
            loop {
                let err = read_forever(&registry, &stats);
                let now = crate::clock::unix_now();
                let said = err.to_string();
                let again = stats
                    .last_error
                    .lock()
                    .replace((now, said.clone()))
                    .is_some_and(|(_, e)| e == said);
                if !again {
                    tracing::warn!(
                        "device identity: reading the neighbour table failed ({said}); clients count by address until it works again (retrying every second)"
                    );
                }
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        });
    if let Err(e) = started {
        *status.last_error.lock() = Some((crate::clock::unix_now(), e.to_string()));
    }
}

fn read_forever(registry: &Registry, stats: &NeighbourStats) -> std::io::Error {
    let fd = match open() {
        Ok(fd) => fd,
        Err(e) => return e,
    };
    if let Err(e) = send(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &dump_request(),
        MsgFlags::empty(),
    ) {
        return e.into();
    }
    let mut buf = vec![0u8; 1 << 16];
    let mut dumped = false;
    loop {
        let n = match recv(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            &mut buf,
            MsgFlags::empty(),
        ) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::ENOBUFS) => {
                // Notifications were lost: dump again on a new socket.
                stats.overflows.fetch_add(1, Ordering::Relaxed);
                return std::io::Error::other("notifications lost (ENOBUFS), dumping again");
            }
            Err(e) => return e.into(),
        };
        let now = crate::clock::unix_now();
        for m in parse(&buf[..n]) {
            match m {
                Message::Entry(e) => {
                    stats.entries.fetch_add(1, Ordering::Relaxed);
                    registry.neighbour(e.ip, e.mac, now);
                }
                Message::Done if !dumped => {
                    dumped = true;
                    if stats.last_error.lock().take().is_some() {
                        tracing::info!("device identity: reading the neighbour table again");
                    }
                }
                Message::Error(code) if code != 0 => {
                    return std::io::Error::from_raw_os_error(-code);
                }
                _ => {}
            }
        }
    }
}

fn open() -> std::io::Result<OwnedFd> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )?;
    // A LAN waking up (hundreds of entries changing at once) must not overflow it.
    let _ = setsockopt(&fd, sockopt::RcvBuf, &(4 << 20));
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &NetlinkAddr::new(0, RTMGRP_NEIGH),
    )?;
    Ok(fd)
}

/// RTM_GETNEIGH with NLM_F_DUMP, every family.
fn dump_request() -> Vec<u8> {
    let mut m = Vec::with_capacity(28);
    m.extend_from_slice(&28u32.to_ne_bytes());
    m.extend_from_slice(&RTM_GETNEIGH.to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    // struct ndmsg: family AF_UNSPEC, padding, ifindex 0, state 0, flags 0, type 0.
    m.extend_from_slice(&[0u8; 12]);
    m
}

#[derive(Debug, PartialEq, Eq)]
pub enum Message {
    Entry(Entry),
    Done,
    /// NLMSG_ERROR's code (0 is an acknowledgement).
    Error(i32),
    Other,
}

/// The messages of one datagram. Malformed lengths end the parse (the rest of that
/// datagram is not trusted).
pub fn parse(mut buf: &[u8]) -> Vec<Message> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        if len < 16 || len > buf.len() {
            break;
        }
        let body = &buf[16..len];
        out.push(match kind {
            NLMSG_DONE => Message::Done,
            NLMSG_ERROR => Message::Error(
                body.get(..4)
                    .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]])),
            ),
            RTM_NEWNEIGH => entry(body).map_or(Message::Other, Message::Entry),
            _ => Message::Other,
        });
        buf = &buf[align(len).min(buf.len())..];
    }
    out
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// struct ndmsg (12 bytes) and its attributes: NDA_DST and NDA_LLADDR of a known entry.
fn entry(body: &[u8]) -> Option<Entry> {
    if body.len() < 12 {
        return None;
    }
    let state = u16::from_ne_bytes([body[8], body[9]]);
    if state & NUD_KNOWN == 0 {
        return None;
    }
    let (mut ip, mut mac) = (None, None);
    let mut attrs = &body[12..];
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]);
        if len < 4 || len > attrs.len() {
            break;
        }
        let data = &attrs[4..len];
        match kind {
            NDA_DST => {
                ip = match data.len() {
                    4 => Some(IpAddr::V4(Ipv4Addr::new(
                        data[0], data[1], data[2], data[3],
                    ))),
                    16 => <[u8; 16]>::try_from(data)
                        .ok()
                        .map(|b| IpAddr::V6(Ipv6Addr::from(b))),
                    _ => None,
                }
            }
            NDA_LLADDR => mac = Mac::from_bytes(data),
            _ => {}
        }
        attrs = &attrs[align(len).min(attrs.len())..];
    }
    let ip = ip.filter(|ip| !ip.is_multicast() && !ip.is_unspecified())?;
    Some(Entry { ip, mac: mac? })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u16, state: u16, dst: &[u8], lladdr: &[u8]) -> Vec<u8> {
        let mut body = vec![0u8; 12];
        body[8..10].copy_from_slice(&state.to_ne_bytes());
        for (t, d) in [(NDA_DST, dst), (NDA_LLADDR, lladdr)] {
            if d.is_empty() {
                continue;
            }
            body.extend_from_slice(&((4 + d.len()) as u16).to_ne_bytes());
            body.extend_from_slice(&t.to_ne_bytes());
            body.extend_from_slice(d);
            while !body.len().is_multiple_of(4) {
                body.push(0);
            }
        }
        let mut m = ((16 + body.len()) as u32).to_ne_bytes().to_vec();
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&body);
        m
    }

    #[test]
    fn entries_with_a_confirmed_mac_are_read_and_the_rest_is_not() {
        let mac = [2, 0, 0, 0, 0, 9];
        let mut buf = message(RTM_NEWNEIGH, 0x02, &[192, 0, 2, 9], &mac);
        let v6: [u8; 16] = "2001:db8::9".parse::<Ipv6Addr>().unwrap().octets();
        buf.extend(message(RTM_NEWNEIGH, 0x04, &v6, &mac));
        // INCOMPLETE: no MAC yet; FAILED; a multicast NOARP entry; a truncated message.
        buf.extend(message(RTM_NEWNEIGH, 0x01, &[192, 0, 2, 10], &[]));
        buf.extend(message(RTM_NEWNEIGH, 0x20, &[192, 0, 2, 11], &mac));
        buf.extend(message(
            RTM_NEWNEIGH,
            0x40,
            &[224, 0, 0, 1],
            &[1, 0, 0x5e, 0, 0, 1],
        ));
        buf.extend(message(NLMSG_DONE, 0, &[], &[]));
        let mut short = message(RTM_NEWNEIGH, 0x02, &[192, 0, 2, 12], &mac);
        short.truncate(20);
        buf.extend(short);
        let got = parse(&buf);
        let mac = Mac(mac);
        assert_eq!(
            got,
            vec![
                Message::Entry(Entry {
                    ip: "192.0.2.9".parse().unwrap(),
                    mac
                }),
                Message::Entry(Entry {
                    ip: "2001:db8::9".parse().unwrap(),
                    mac
                }),
                Message::Other,
                Message::Other,
                Message::Other,
                Message::Done,
            ]
        );
    }
}
