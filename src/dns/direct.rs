//! Sinkhole answers made straight from the request's bytes.
//!
//! The first answer to a blocked name (before the UDP fast path can replay it) used to go
//! through hickory-server's request and response objects: a decoded message, owned names,
//! records and an encoder with name compression. With a big list most blocked names are
//! asked for the first time in a while, so that was the blocked path's main cost. Here
//! the one question of a plain query is read in place, the verdict is the policy's, and
//! the sinkhole answer is written byte by byte, **exactly** as the hickory path writes it
//! (tests/resolver.rs compares the two byte for byte): the same header bits, the question
//! copied, hickory's name compression (the first earlier name whose remaining labels are
//! equal), the OPT with the EDE last.
//!
//! Only the common shape is taken: opcode QUERY, one question of class IN, no answer or
//! authority records, at most an OPT of version 0 whose options need no parsing (not
//! client subnet, not NSID), nothing after it, and an answer that fits the client's size.
//! Anything else returns None and goes the full path, which answers it as before.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::policy::{Mode, QName};

const TYPE_A: u16 = 1;
const TYPE_SOA: u16 = 6;
const TYPE_AAAA: u16 = 28;
const TYPE_OPT: u16 = 41;
const TYPE_IXFR: u16 = 251;
const TYPE_AXFR: u16 = 252;
const CLASS_IN: u16 = 1;
const OPTION_NSID: u16 = 3;
const OPTION_SUBNET: u16 = 8;
const OPTION_EDE: u16 = 15;

/// A plain query, read in place.
pub struct Query<'a> {
    packet: &'a [u8],
    /// End of the question (name, type, class) in `packet`.
    question_end: usize,
    /// Where each label of the name starts (its length byte), most specific first.
    labels: [u16; 128],
    label_count: usize,
    pub qtype: u16,
    /// The client's OPT: its UDP payload size and DO bit.
    edns: Option<(u16, bool)>,
}

fn u16_at(p: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*p.get(at)?, *p.get(at + 1)?]))
}

impl<'a> Query<'a> {
    /// The query, if it has the one shape this path answers.
    pub fn read(packet: &'a [u8]) -> Option<Self> {
        if packet.len() < 12 || packet[2] & 0x80 != 0 || (packet[2] >> 3) & 0x0f != 0 {
            return None;
        }
        let counts = [
            u16_at(packet, 4)?,
            u16_at(packet, 6)?,
            u16_at(packet, 8)?,
            u16_at(packet, 10)?,
        ];
        if counts[0] != 1 || counts[1] != 0 || counts[2] != 0 || counts[3] > 1 {
            return None;
        }
        let mut at = 12;
        let mut labels = [0u16; 128];
        let mut label_count = 0;
        loop {
            let len = *packet.get(at)? as usize;
            if len == 0 {
                at += 1;
                break;
            }
            // A pointer or an extended label type: not in a plain query's question.
            if len > 63 {
                return None;
            }
            *labels.get_mut(label_count)? = at as u16;
            label_count += 1;
            at += 1 + len;
            if at - 12 > 254 {
                return None;
            }
        }
        let qtype = u16_at(packet, at)?;
        let class = u16_at(packet, at + 2)?;
        let question_end = at + 4;
        if class != CLASS_IN || matches!(qtype, TYPE_OPT | TYPE_AXFR | TYPE_IXFR) {
            return None;
        }
        let mut edns = None;
        let mut at = question_end;
        if counts[3] == 1 {
            // Root owner, type OPT, payload, extended rcode 0, version 0, flags, options.
            if *packet.get(at)? != 0 || u16_at(packet, at + 1)? != TYPE_OPT {
                return None;
            }
            let payload = u16_at(packet, at + 3)?;
            if *packet.get(at + 5)? != 0 || *packet.get(at + 6)? != 0 {
                return None;
            }
            let dnssec_ok = packet.get(at + 7)? & 0x80 != 0;
            let rdlen = u16_at(packet, at + 9)? as usize;
            at += 11;
            let end = at + rdlen;
            while at < end {
                let code = u16_at(packet, at)?;
                let len = u16_at(packet, at + 2)? as usize;
                if matches!(code, OPTION_NSID | OPTION_SUBNET) {
                    return None;
                }
                at += 4 + len;
            }
            if at != end {
                return None;
            }
            edns = Some((payload, dnssec_ok));
        }
        if at != packet.len() {
            return None;
        }
        Some(Query {
            packet,
            question_end,
            labels,
            label_count,
            qtype,
            edns,
        })
    }

    /// The name's labels as the client wrote them.
    fn label(&self, i: usize) -> &'a [u8] {
        let at = self.labels[i] as usize;
        let len = self.packet[at] as usize;
        &self.packet[at + 1..at + 1 + len]
    }

    pub fn labels(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        (0..self.label_count).map(|i| self.label(i))
    }

    pub fn qname(&self) -> Option<QName> {
        QName::from_labels(self.labels())
    }
}

/// What the sinkhole says, as the profile and policy give it.
pub struct Sinkhole<'a> {
    pub mode: Mode,
    /// How many of the name's last labels the deciding rule was written for: the owner
    /// of the synthesized SOA.
    pub zone_labels: usize,
    pub ttl: u32,
    pub serial: u32,
    pub ede_text: &'a str,
    pub udp_max: u16,
}

/// hickory's encoder, as far as these answers need it: earlier names (their remaining
/// labels, uncompressed) that a later name may point to. The uncompressed labels are
/// kept in `plain` (a name's candidates are suffixes of it), all on the stack.
struct Writer {
    buf: Vec<u8>,
    plain: [u8; 1024],
    plain_len: usize,
    /// (offset in the message, start and end in `plain`)
    names: [(usize, usize, usize); CANDIDATES_MAX],
    name_count: usize,
}

/// hickory-proto's limit of stored compression candidates (COMPRESSION_CANDIDATE_LIMIT).
const CANDIDATES_MAX: usize = 64;

impl Writer {
    fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// Stores `bytes` at message offset `at` as a candidate, as hickory does: while the
    /// message is below 0x3FFF bytes and fewer than CANDIDATES_MAX are stored.
    fn candidate(&mut self, at: usize, plain: (usize, usize)) {
        if self.buf.len() < 0x3FFF && self.name_count < CANDIDATES_MAX {
            self.names[self.name_count] = (at, plain.0, plain.1);
            self.name_count += 1;
        }
    }

    /// Copies `bytes` into `plain`; None if it is full (the caller takes the full path).
    fn keep_plain(&mut self, bytes: &[u8]) -> Option<(usize, usize)> {
        let start = self.plain_len;
        let end = start + bytes.len();
        self.plain.get_mut(start..end)?.copy_from_slice(bytes);
        self.plain_len = end;
        Some((start, end))
    }

    /// A name, compressed as hickory-proto does: its labels are written, then for each
    /// label from the first, the rest of the name is looked up among the stored ones;
    /// the first match replaces that rest by a pointer, else the rest is stored.
    fn name<'n>(&mut self, labels: impl Iterator<Item = &'n [u8]>) -> Option<()> {
        let mut starts = [0usize; 128];
        let mut count = 0;
        let first = self.buf.len();
        for label in labels {
            *starts.get_mut(count)? = self.buf.len();
            count += 1;
            self.buf.push(label.len() as u8);
            self.buf.extend_from_slice(label);
        }
        let end = self.buf.len();
        let plain_start = self.plain_len;
        self.plain
            .get_mut(plain_start..plain_start + end - first)?
            .copy_from_slice(&self.buf[first..end]);
        self.plain_len += end - first;
        for &start in &starts[..count] {
            let rest = (plain_start + start - first, plain_start + end - first);
            let found = self.names[..self.name_count]
                .iter()
                .find(|(_, a, b)| self.plain[*a..*b] == self.plain[rest.0..rest.1])
                .map(|(at, _, _)| *at);
            if let Some(at) = found
                && at < 0x4000
            {
                self.buf.truncate(start);
                self.u16(0xC000 | at as u16);
                return Some(());
            }
            self.candidate(start, rest);
        }
        self.buf.push(0);
        Some(())
    }

    /// Type, class IN, TTL; then RDATA written by `data` behind its length.
    fn record(
        &mut self,
        rtype: u16,
        ttl: u32,
        data: impl FnOnce(&mut Self) -> Option<()>,
    ) -> Option<()> {
        self.u16(rtype);
        self.u16(CLASS_IN);
        self.u32(ttl);
        let len_at = self.buf.len();
        self.u16(0);
        data(self)?;
        let len = (self.buf.len() - len_at - 2) as u16;
        self.buf[len_at..len_at + 2].copy_from_slice(&len.to_be_bytes());
        Some(())
    }
}

const MNAME: [&[u8]; 2] = [b"telesink", b"invalid"];
const RNAME: [&[u8]; 3] = [b"hostmaster", b"telesink", b"invalid"];

/// The sinkhole answer to `q`, or None when it would not fit the client's size (the full
/// path then truncates it as hickory does).
pub fn answer(q: &Query<'_>, s: &Sinkhole<'_>) -> Option<Vec<u8>> {
    let p = q.packet;
    let address: Option<either::Address> = match s.mode {
        Mode::Null => either::of(
            q.qtype,
            Some(Ipv4Addr::UNSPECIFIED),
            Some(Ipv6Addr::UNSPECIFIED),
        ),
        Mode::Ip { v4, v6 } => either::of(q.qtype, v4, v6),
        _ => None,
    };
    // rcode, answer record, SOA in the authority section.
    let (rcode, soa) = match (s.mode, &address) {
        (Mode::Nxdomain, _) => (3u8, true),
        (Mode::Refused, _) => (5, false),
        (_, Some(_)) => (0, false),
        (_, None) => (0, true),
    };
    let mut w = Writer {
        buf: Vec::with_capacity(160 + q.question_end),
        plain: [0; 1024],
        plain_len: 0,
        names: [(0, 0, 0); CANDIDATES_MAX],
        name_count: 0,
    };
    // Header: ID, QR, opcode QUERY, RD and CD as asked, RA; counts.
    w.buf.extend_from_slice(&p[..2]);
    w.buf.push(0x80 | (p[2] & 0x01));
    w.buf.push(0x80 | (p[3] & 0x10) | rcode);
    w.u16(1);
    w.u16(u16::from(address.is_some()));
    w.u16(u16::from(soa));
    w.u16(u16::from(q.edns.is_some()));
    // The question as the client sent it; hickory stores it as a candidate too (it never
    // matches a name: it ends in the root label, type and class).
    let question = &p[12..q.question_end];
    w.buf.extend_from_slice(question);
    let plain = w.keep_plain(question)?;
    w.candidate(12, plain);
    if let Some(address) = &address {
        w.name(q.labels())?;
        match address {
            either::Address::V4(ip) => w.record(TYPE_A, s.ttl, |w| {
                w.buf.extend_from_slice(&ip.octets());
                Some(())
            })?,
            either::Address::V6(ip) => w.record(TYPE_AAAA, s.ttl, |w| {
                w.buf.extend_from_slice(&ip.octets());
                Some(())
            })?,
        }
    }
    if soa {
        let skip = q.label_count.saturating_sub(s.zone_labels);
        w.name(q.labels().skip(skip))?;
        w.record(TYPE_SOA, s.ttl, |w| {
            w.name(MNAME.into_iter())?;
            w.name(RNAME.into_iter())?;
            w.u32(s.serial);
            w.u32(3600);
            w.u32(600);
            w.u32(86400);
            w.u32(s.ttl);
            Some(())
        })?;
    }
    let mut max = 512usize;
    if let Some((payload, dnssec_ok)) = q.edns {
        let payload = payload.clamp(512, s.udp_max.max(512));
        max = payload as usize;
        let text = super::answer::truncate_utf8(s.ede_text, super::answer::EDE_TEXT_MAX);
        w.buf.push(0);
        w.u16(TYPE_OPT);
        w.u16(payload);
        w.u32(if dnssec_ok { 0x8000 } else { 0 });
        w.u16((4 + 2 + text.len()) as u16);
        w.u16(OPTION_EDE);
        w.u16((2 + text.len()) as u16);
        w.u16(super::answer::EDE_BLOCKED);
        w.buf.extend_from_slice(text.as_bytes());
    }
    (w.buf.len() <= max).then_some(w.buf)
}

mod either {
    use std::net::{Ipv4Addr, Ipv6Addr};

    pub enum Address {
        V4(Ipv4Addr),
        V6(Ipv6Addr),
    }

    /// The address record for `qtype` (A or AAAA), when the mode has one.
    pub fn of(qtype: u16, v4: Option<Ipv4Addr>, v6: Option<Ipv6Addr>) -> Option<Address> {
        match qtype {
            super::TYPE_A => v4.map(Address::V4),
            super::TYPE_AAAA => v6.map(Address::V6),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16, opt: Option<&[u8]>) -> Vec<u8> {
        let mut p = vec![
            0x12,
            0x34,
            0x01,
            0x00,
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            u8::from(opt.is_some()),
        ];
        for l in name.split('.') {
            p.push(l.len() as u8);
            p.extend_from_slice(l.as_bytes());
        }
        p.push(0);
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&[0, 1]);
        if let Some(opt) = opt {
            p.extend_from_slice(opt);
        }
        p
    }

    #[test]
    fn only_the_plain_shape_is_read() {
        assert!(Query::read(&query("a.example", TYPE_A, None)).is_some());
        let opt = [0, 0, 41, 4, 208, 0, 0, 0x80, 0, 0, 0];
        let q = query("a.example", TYPE_A, Some(&opt));
        assert_eq!(Query::read(&q).unwrap().edns, Some((1232, true)));
        // Version 1 (BADVERS), client subnet, trailing bytes, CH class, pointers: no.
        let v1 = [0, 0, 41, 4, 208, 0, 1, 0, 0, 0, 0];
        assert!(Query::read(&query("a.example", TYPE_A, Some(&v1))).is_none());
        let ecs = [0, 0, 41, 4, 208, 0, 0, 0, 0, 0, 8, 0, 8, 0, 4, 0, 1, 24, 0];
        assert!(Query::read(&query("a.example", TYPE_A, Some(&ecs))).is_none());
        let mut trailing = query("a.example", TYPE_A, None);
        trailing.push(0);
        assert!(Query::read(&trailing).is_none());
        let mut chaos = query("a.example", TYPE_A, None);
        let n = chaos.len();
        chaos[n - 1] = 3;
        assert!(Query::read(&chaos).is_none());
        let mut pointer = query("a.example", TYPE_A, None);
        pointer[12] = 0xC0;
        assert!(Query::read(&pointer).is_none());
        assert!(Query::read(&query("a.example", TYPE_AXFR, None)).is_none());
        // A truncated option list.
        let short = [0, 0, 41, 4, 208, 0, 0, 0, 0, 0, 6, 0, 10, 0, 8, 1, 2];
        assert!(Query::read(&query("a.example", TYPE_A, Some(&short))).is_none());
    }

    #[test]
    fn an_answer_over_the_clients_size_is_left_to_the_full_path() {
        let long: Vec<String> = (0..4).map(|i| format!("{i}").repeat(60)).collect();
        let name = long.join(".");
        let q = query(&name, TYPE_MX, None);
        let q = Query::read(&q).unwrap();
        let s = Sinkhole {
            mode: Mode::Nxdomain,
            zone_labels: 4,
            ttl: 60,
            serial: 1,
            ede_text: "blocked",
            udp_max: 1232,
        };
        // Question 250 bytes + SOA owner 250 + the rest: over 512 without EDNS.
        assert!(answer(&q, &s).is_none());
    }

    const TYPE_MX: u16 = 15;
}
