//! Reading nf_tables change notifications (the NFNLGRP_NFTABLES multicast group), so the
//! daemon learns when someone else deletes or flushes its table: Debian's
//! `nftables.service` starts with `flush ruleset`, an admin may `nft delete table`.
//!
//! The kernel sends one message per changed object and, at the end of each transaction,
//! NFT_MSG_NEWGEN naming the process (thread id) that made it. So the parser collects
//! whether a transaction deleted anything of ours and decides at NEWGEN: our own
//! in-place applies delete rules and set elements too, and are told apart by their
//! thread id. Plain byte parsing: no unsafe code.

/// nfnetlink subsystem of nf_tables (`NFNL_SUBSYS_NFTABLES`).
const SUBSYS_NFTABLES: u16 = 10;
/// `NFT_MSG_*` message types that remove something.
const DELTABLE: u16 = 2;
const DELCHAIN: u16 = 5;
const DELRULE: u16 = 8;
const DELSET: u16 = 11;
const DELSETELEM: u16 = 14;
const NEWGEN: u16 = 15;
/// The first attribute of every object message is its table's name; for set elements
/// the second is the set's name. For NEWGEN, attribute 2 is the process id.
const ATTR_TABLE: u16 = 1;
const ATTR_SET: u16 = 2;
const ATTR_GEN_PID: u16 = 2;
/// NLMSG_ERROR, NLMSG_DONE and the other control messages are below this.
const NLMSG_MIN_TYPE: u16 = 0x10;

/// What one transaction did to our table, decided at its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tampered {
    /// What was removed first, for the log: "table", "chain lan_forward", ...
    pub what: String,
    /// The thread id that made the change.
    pub pid: u32,
}

/// Collects the messages of one transaction at a time.
pub struct Watcher {
    table: String,
    touched: Option<String>,
}

impl Watcher {
    pub fn new(table: &str) -> Self {
        Watcher {
            table: table.to_owned(),
            touched: None,
        }
    }

    /// Feeds one datagram of notifications; returns the transactions, ended in it, that
    /// removed something of our table (by whatever process: the caller tells its own).
    pub fn feed(&mut self, datagram: &[u8]) -> Vec<Tampered> {
        let mut out = Vec::new();
        let mut rest = datagram;
        while rest.len() >= 16 {
            let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let kind = u16::from_ne_bytes([rest[4], rest[5]]);
            if len < 16 || len > rest.len() {
                break;
            }
            let msg = &rest[..len];
            rest = &rest[align4(len).min(rest.len())..];
            if kind < NLMSG_MIN_TYPE || kind >> 8 != SUBSYS_NFTABLES {
                continue;
            }
            // nlmsghdr (16 bytes), then nfgenmsg (4 bytes), then attributes.
            let attrs = msg.get(20..).unwrap_or_default();
            match kind & 0xff {
                NEWGEN => {
                    if let Some(what) = self.touched.take() {
                        let pid = attr(attrs, ATTR_GEN_PID)
                            .filter(|v| v.len() >= 4)
                            .map_or(0, |v| u32::from_be_bytes([v[0], v[1], v[2], v[3]]));
                        out.push(Tampered { what, pid });
                    }
                }
                t @ (DELTABLE | DELCHAIN | DELRULE | DELSET | DELSETELEM) => {
                    if attr_str(attrs, ATTR_TABLE) != Some(self.table.as_str()) {
                        continue;
                    }
                    let set = attr_str(attrs, ATTR_SET).unwrap_or("");
                    // Learned addresses time out by design; their removal is no tampering.
                    if t == DELSETELEM && set.starts_with("learned_") {
                        continue;
                    }
                    let what = match t {
                        DELTABLE => "table".to_owned(),
                        DELCHAIN => "a chain".to_owned(),
                        DELRULE => "rules".to_owned(),
                        DELSET => format!("set {set}"),
                        _ => format!("elements of set {set}"),
                    };
                    self.touched.get_or_insert(what);
                }
                _ => {}
            }
        }
        out
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// The payload of the first attribute of this type at the top level.
fn attr(mut attrs: &[u8], want: u16) -> Option<&[u8]> {
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
        if len < 4 || len > attrs.len() {
            return None;
        }
        if kind == want {
            return Some(&attrs[4..len]);
        }
        attrs = &attrs[align4(len).min(attrs.len())..];
    }
    None
}

/// A netfilter netlink socket bound to a kernel-chosen port id and to the multicast
/// `groups` (a bit mask; 0 for none).
pub fn socket(groups: u32) -> nix::Result<std::os::fd::OwnedFd> {
    use nix::sys::socket::{AddressFamily, NetlinkAddr, SockFlag, SockProtocol, SockType, bind};
    use std::os::fd::AsRawFd;
    let fd = nix::sys::socket::socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkNetFilter,
    )?;
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups))?;
    Ok(fd)
}

/// `NFT_MSG_GETGEN`, and the generation id's attribute in its answer (`NFTA_GEN_ID`).
const GETGEN: u16 = 16;
const ATTR_GEN_ID: u16 = 1;

/// The ruleset's generation now: every committed nf_tables transaction, of any process,
/// moves it by one. Asked on a socket of its own, so it never meets notifications.
pub fn generation() -> std::io::Result<u32> {
    use nix::sys::socket::{MsgFlags, NetlinkAddr, recv, sendto, setsockopt, sockopt};
    use std::os::fd::AsRawFd;
    let fd = socket(0)?;
    setsockopt(
        &fd,
        sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(1, 0),
    )?;
    let seq: u32 = 0x7e1e_5eed;
    let mut request = Vec::with_capacity(20);
    request.extend_from_slice(&20u32.to_ne_bytes());
    request.extend_from_slice(&(SUBSYS_NFTABLES << 8 | GETGEN).to_ne_bytes());
    request.extend_from_slice(&1u16.to_ne_bytes()); // NLM_F_REQUEST
    request.extend_from_slice(&seq.to_ne_bytes());
    request.extend_from_slice(&0u32.to_ne_bytes());
    request.extend_from_slice(&[0, 0, 0, 0]); // nfgenmsg: AF_UNSPEC, version 0, res_id 0
    sendto(
        fd.as_raw_fd(),
        &request,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )?;
    let mut buf = vec![0u8; 8192];
    loop {
        let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
        let mut rest = &buf[..n];
        while rest.len() >= 16 {
            let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let kind = u16::from_ne_bytes([rest[4], rest[5]]);
            let got = u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]);
            if len < 16 || len > rest.len() {
                break;
            }
            let msg = &rest[..len];
            rest = &rest[align4(len).min(rest.len())..];
            if got != seq {
                continue;
            }
            if kind == 2 {
                // NLMSG_ERROR: the error code follows the header, negated.
                let code = msg
                    .get(16..20)
                    .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                return Err(std::io::Error::from_raw_os_error(-code));
            }
            if kind == SUBSYS_NFTABLES << 8 | NEWGEN
                && let Some(v) = attr(msg.get(20..).unwrap_or_default(), ATTR_GEN_ID)
                && v.len() >= 4
            {
                return Ok(u32::from_be_bytes([v[0], v[1], v[2], v[3]]));
            }
        }
    }
}

fn attr_str(attrs: &[u8], want: u16) -> Option<&str> {
    let v = attr(attrs, want)?;
    let v = v.split(|&b| b == 0).next().unwrap_or(v);
    std::str::from_utf8(v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(kind: u16, attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = vec![1u8, 0, 0, 0]; // nfgenmsg: family inet... version, res_id
        for (t, v) in attrs {
            let len = 4 + v.len();
            body.extend_from_slice(&(len as u16).to_ne_bytes());
            body.extend_from_slice(&t.to_ne_bytes());
            body.extend_from_slice(v);
            while body.len() % 4 != 0 {
                body.push(0);
            }
        }
        let mut m = Vec::new();
        m.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&((SUBSYS_NFTABLES << 8) | kind).to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&body);
        m
    }

    #[test]
    fn a_transaction_that_deletes_our_table_is_reported_with_its_pid() {
        let mut w = Watcher::new("telesink");
        let mut d = msg(DELTABLE, &[(ATTR_TABLE, b"other\0")]);
        d.extend(msg(
            NEWGEN,
            &[(1, &7u32.to_be_bytes()), (2, &4242u32.to_be_bytes())],
        ));
        assert!(w.feed(&d).is_empty(), "another table's delete is not ours");
        let mut d = msg(DELRULE, &[(ATTR_TABLE, b"telesink\0")]);
        d.extend(msg(DELTABLE, &[(ATTR_TABLE, b"telesink\0")]));
        let got = w.feed(&d);
        assert!(got.is_empty(), "decided only at the transaction's end");
        let got = w.feed(&msg(NEWGEN, &[(2, &4242u32.to_be_bytes())]));
        assert_eq!(
            got,
            vec![Tampered {
                what: "rules".into(),
                pid: 4242
            }]
        );
    }

    #[test]
    fn expiring_learned_addresses_are_not_tampering() {
        let mut w = Watcher::new("telesink");
        let mut d = msg(
            DELSETELEM,
            &[(ATTR_TABLE, b"telesink\0"), (ATTR_SET, b"learned_tele_4\0")],
        );
        d.extend(msg(NEWGEN, &[(2, &1u32.to_be_bytes())]));
        assert!(w.feed(&d).is_empty());
        let mut d = msg(
            DELSETELEM,
            &[(ATTR_TABLE, b"telesink\0"), (ATTR_SET, b"cidr_tele_4\0")],
        );
        d.extend(msg(NEWGEN, &[(2, &1u32.to_be_bytes())]));
        assert_eq!(w.feed(&d)[0].what, "elements of set cidr_tele_4");
    }

    #[test]
    fn truncated_input_is_ignored() {
        let mut w = Watcher::new("telesink");
        let d = msg(DELTABLE, &[(ATTR_TABLE, b"telesink\0")]);
        assert!(w.feed(&d[..10]).is_empty());
        assert!(w.feed(&d[..d.len() - 3]).is_empty());
    }
}
