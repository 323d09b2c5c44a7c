//! The only module with unsafe code: encoding a `Plan` as one nftables netlink batch,
//! sending it, checking every acknowledgement, and reading counters back.
//!
//! nftnl's safe API covers tables, chains, plain rules and plain named sets. What it lacks
//! (interval sets and their END elements, inverted lookups, dynset updates with a counter,
//! dumping set elements with their counters, a single-`sendmsg` send) is done here through
//! `nftnl::nftnl_sys`, each block with the reason it is sound. Ownership follows Mullvad's
//! firewall: one `inet telesink` table, the whole policy in one batch, so the kernel swaps
//! it in one transaction, never showing a half-built table; afterwards we check the table
//! is there. When our table already exists the batch replaces its contents in place
//! (chains and sets kept, flushed and refilled, what the plan dropped deleted) rather than
//! `add table; delete table; add table`: on kernel 6.18 a new interval set answers lookups
//! only after the commit's last step, while the new rules are already live, and packets
//! slipped through in that moment (docs/ARCHITECTURE.md, "Replace in place"). An existing set
//! answers from its old contents until the new ones are in. If the kernel refuses the
//! in-place batch (a set's type changed), the full replace is used.

use std::ffi::{CString, c_void};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::time::Duration;

use nftnl::expr::{Expression, IcmpCode, RejectionType, Verdict};
use nftnl::nftnl_sys::{self as sys, libc};
use nftnl::set::Set;
use nftnl::{Batch, Chain, FinalizedBatch, MsgType, ProtoFamily, Rule, Table, nft_expr};

use super::plan::{self, Action, Family, Hook, L4, Plan, RuleSpec, SetKind, SetSpec};

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("cannot open a netlink socket (telesink needs CAP_NET_ADMIN): {0}")]
    Socket(io::Error),
    #[error("sending the nftables batch failed: {0}")]
    Send(io::Error),
    #[error("the kernel rejected the nftables batch: {0}")]
    Rejected(io::Error),
    #[error("no acknowledgement from the kernel within {0:?}")]
    Timeout(Duration),
    #[error(
        "after applying, table inet {} is not there (is nf_tables available?)",
        plan::TABLE
    )]
    TableMissing,
    #[error("a name in the plan contains a NUL byte: {0:?}")]
    BadName(String),
    #[error(
        "the kernel refused: telesink needs CAP_NET_ADMIN for the firewall (run it as root, or grant the capability as the shipped unit does)"
    )]
    NoCapability,
}

/// A refusal, named for what it is when it is the missing capability.
fn refused(e: io::Error) -> NetlinkError {
    if e.raw_os_error() == Some(libc::EPERM) {
        NetlinkError::NoCapability
    } else {
        NetlinkError::Rejected(e)
    }
}

const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Big batches (100k ranges are ~5 MB) must fit the socket buffers in one go.
const SOCKET_BUFFER: usize = 64 << 20;

/// Replaces the whole `inet telesink` table with `plan`, atomically.
pub fn apply(plan: &Plan) -> Result<(), NetlinkError> {
    if table_exists()? {
        let existing = existing_sets()?;
        match send_plan(plan, Some(&existing), &Keep::default()) {
            Ok(()) => return verify(),
            Err(NetlinkError::Rejected(e)) => {
                tracing::warn!("in-place firewall update refused ({e}); replacing the table");
            }
            Err(e) => return Err(e),
        }
    }
    send_plan(plan, None, &Keep::default())?;
    verify()
}

/// Sets of the installed table to leave as they are in an in-place batch, and the
/// element changes to send for them instead of a refill.
#[derive(Default)]
pub struct Keep<'a> {
    pub sets: &'a [String],
    pub diffs: &'a [plan::ElementDiff],
}

/// Installs `plan` over the table in force, keeping the sets `keep` names (plus their
/// element differences) and rewriting only the chains, the rules and the sets only the
/// new plan has, in one transaction (`PlanChange::Rules`). Falls back to the full
/// in-place rewrite when the kernel refuses it.
pub fn apply_keeping(plan: &Plan, keep: &Keep<'_>) -> Result<(), NetlinkError> {
    let existing = existing_sets()?;
    if keep.sets.iter().all(|k| existing.contains(k)) {
        match send_plan(plan, Some(&existing), keep) {
            Ok(()) => return verify(),
            Err(NetlinkError::Rejected(e)) => {
                tracing::warn!("firewall rule change refused ({e}); rewriting the table in place");
            }
            Err(e) => return Err(e),
        }
    } else {
        tracing::warn!(
            "firewall: a set telesink installed is gone from the kernel; rewriting the table in place"
        );
    }
    apply(plan)
}

fn verify() -> Result<(), NetlinkError> {
    if table_exists()? {
        Ok(())
    } else {
        Err(NetlinkError::TableMissing)
    }
}

/// One batch for the plan: in place over the sets named in `existing`, or (None) as a
/// fresh table replacing whatever is there. In place, the sets `keep` names stay as they
/// are apart from `keep.diffs`.
fn send_plan(
    plan: &Plan,
    existing: Option<&[String]>,
    keep: &Keep<'_>,
) -> Result<(), NetlinkError> {
    let table = Table::new(cstr(plan::TABLE)?, ProtoFamily::Inet);
    let mut batch = Batch::new();
    batch.add(&table, MsgType::Add);
    if existing.is_none() {
        batch.add(&table, MsgType::Del);
        batch.add(&table, MsgType::Add);
    }

    let mut chains = Vec::new();
    for (hook, name, on) in [
        (Hook::Prerouting, plan::CHAIN_DNAT, plan.prerouting),
        (Hook::Forward, plan::CHAIN_FORWARD, plan.forward),
        (Hook::Output, plan::CHAIN_OUTPUT, plan.output),
    ] {
        if !on && existing.is_none() {
            continue;
        }
        let mut chain = Chain::new(cstr(name)?, &table);
        // (type, hook, priority): filter at 0; the redirect at dstnat (-100), as nft does.
        let (kind, nf_hook, priority) = match hook {
            Hook::Prerouting => (nftnl::ChainType::Nat, nftnl::Hook::PreRouting, -100),
            Hook::Forward => (nftnl::ChainType::Filter, nftnl::Hook::Forward, 0),
            Hook::Output => (nftnl::ChainType::Filter, nftnl::Hook::Out, 0),
        };
        chain.set_type(kind);
        chain.set_hook(nf_hook, priority);
        chain.set_policy(nftnl::Policy::Accept);
        batch.add(&chain, MsgType::Add);
        if !on {
            // In place, a chain the plan dropped goes. Adding it first (above) makes the
            // delete valid whether or not it exists.
            batch.add(&chain, MsgType::Del);
            continue;
        }
        if existing.is_some() {
            // A rule delete without a handle flushes the chain: its old rules stop
            // at the same commit at which the new ones start.
            batch.add(&Rule::new(&chain), MsgType::Del);
        }
        chains.push((hook, chain));
    }
    if let Some(existing) = existing {
        // Sets the plan no longer has; no rule refers to them once the chains are flushed.
        for name in existing
            .iter()
            .filter(|n| !plan.sets.iter().any(|s| &s.name == *n))
        {
            let gone = cstr(name)?;
            let set = Set::<Ipv4Addr>::new_named(&gone, 0, &table, ProtoFamily::Inet);
            batch.add(&set, MsgType::Del);
        }
    }

    let kept = |spec: &SetSpec| existing.is_some() && keep.sets.contains(&spec.name);
    let mut sets = Vec::with_capacity(plan.sets.len());
    for (id, spec) in plan.sets.iter().enumerate() {
        // A kept set is declared (so rules can name it) without elements: adding an
        // existing set changes nothing in it.
        let declared;
        let spec = match kept(spec) {
            true => {
                declared = spec.declaration();
                &declared
            }
            false => spec,
        };
        sets.push(NamedSet::new(spec, id as u32, &table)?);
    }
    let table_name = cstr(plan::TABLE)?;
    for (set, spec) in sets.iter().zip(&plan.sets) {
        // An element delete that names no element flushes the set; packets keep
        // matching the old elements until the commit that brings the new ones.
        let flush = match existing {
            Some(e) if e.contains(&spec.name) && !kept(spec) => {
                Some(ElemUpdate::new(&table_name, &cstr(&spec.name)?)?)
            }
            _ => None,
        };
        set.add_to(&mut batch, flush.as_ref());
    }
    // The kept sets' element changes, in the same transaction as the new rules.
    let (removals, additions) = element_updates(keep.diffs)?;
    for m in &removals {
        batch.add(m, MsgType::Del);
    }
    for m in &additions {
        batch.add(m, MsgType::Add);
    }

    for (hook, chain) in &chains {
        for spec in plan.rules.iter().filter(|r| r.hook == *hook) {
            let rule = build_rule(chain, spec, &sets)?;
            batch.add(&rule, MsgType::Add);
        }
    }
    send(batch.finalize())
}

/// A dump request about our table: its sets (`elements_of` None) or one set's elements.
fn set_dump_request(
    seq: u32,
    elements_of: Option<&str>,
) -> Result<(Box<AlignedBuf>, usize), NetlinkError> {
    let table = cstr(plan::TABLE)?;
    let name = elements_of.map(cstr).transpose()?;
    let mut request = AlignedBuf::new();
    let msg = match name {
        Some(_) => libc::NFT_MSG_GETSETELEM,
        None => libc::NFT_MSG_GETSET,
    };
    // SAFETY: `request` is a zeroed, aligned buffer far larger than one header plus two
    // short string attributes; nftnl writes within it and we send only the length the
    // header reports. The set object is allocated, used and freed here.
    let len = unsafe {
        let nlh = sys::nftnl_nlmsg_build_hdr(
            request.0.as_mut_ptr().cast(),
            msg as u16,
            libc::NFPROTO_INET as u16,
            (libc::NLM_F_DUMP | libc::NLM_F_ACK) as u16,
            seq,
        );
        let set = alloc(sys::nftnl_set_alloc())?;
        sys::nftnl_set_set_str(set.as_ptr(), sys::NFTNL_SET_TABLE as u16, table.as_ptr());
        match &name {
            Some(name) => {
                sys::nftnl_set_set_str(set.as_ptr(), sys::NFTNL_SET_NAME as u16, name.as_ptr());
                sys::nftnl_set_elems_nlmsg_build_payload(nlh, set.as_ptr());
            }
            None => sys::nftnl_set_nlmsg_build_payload(nlh, set.as_ptr()),
        }
        sys::nftnl_set_free(set.as_ptr());
        (*nlh).nlmsg_len as usize
    };
    Ok((request, len))
}

/// A dump that a commit of another process interrupted (the kernel flags it
/// NLM_F_DUMP_INTR, libmnl reports EINTR) mixed two generations: it is asked again, up to
/// this many times, then the error is returned.
const DUMP_TRIES: usize = 10;

fn dump_retrying<T>(mut dump: impl FnMut() -> Result<T, NetlinkError>) -> Result<T, NetlinkError> {
    let mut tries = 1;
    loop {
        match dump() {
            Err(NetlinkError::Rejected(e))
                if e.raw_os_error() == Some(libc::EINTR) && tries < DUMP_TRIES =>
            {
                tries += 1;
            }
            other => return other,
        }
    }
}

/// Names of the sets in our table now.
pub fn existing_sets() -> Result<Vec<String>, NetlinkError> {
    dump_retrying(existing_sets_once)
}

fn existing_sets_once() -> Result<Vec<String>, NetlinkError> {
    let socket = open()?;
    let seq = 9;
    let (request, len) = set_dump_request(seq, None)?;
    socket.send(&request.0[..len]).map_err(NetlinkError::Send)?;
    let mut names = Vec::new();
    let mut buf = AlignedBuf::new();
    loop {
        let n = recv(&socket, &mut buf)?;
        match mnl::cb_run2(&buf.0[..n], seq, socket.portid(), set_name_cb, &mut names) {
            Ok(mnl::CbResult::Stop) => return Ok(names),
            Ok(mnl::CbResult::Ok) => {}
            Err(e) => return Err(refused(e)),
        }
    }
}

fn set_name_cb(msg: &libc::nlmsghdr, names: &mut Vec<String>) -> libc::c_int {
    // SAFETY: mnl hands us a complete, validated netlink message; nftnl parses it into a
    // set we allocate and free here; the strings it returns live as long as that set and
    // are copied before it is freed.
    unsafe {
        let Some(set) = NonNull::new(sys::nftnl_set_alloc()) else {
            return mnl_sys_cb_ok();
        };
        if sys::nftnl_set_nlmsg_parse(msg, set.as_ptr()) >= 0 {
            let table = sys::nftnl_set_get_str(set.as_ptr(), sys::NFTNL_SET_TABLE as u16);
            let name = sys::nftnl_set_get_str(set.as_ptr(), sys::NFTNL_SET_NAME as u16);
            if !table.is_null()
                && !name.is_null()
                && std::ffi::CStr::from_ptr(table).to_bytes() == plan::TABLE.as_bytes()
            {
                names.push(
                    std::ffi::CStr::from_ptr(name)
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
        sys::nftnl_set_free(set.as_ptr());
    }
    mnl_sys_cb_ok()
}

/// Deletes our table if it exists. Adding it first makes the delete valid either way.
pub fn remove() -> Result<(), NetlinkError> {
    let table = Table::new(cstr(plan::TABLE)?, ProtoFamily::Inet);
    let mut batch = Batch::new();
    batch.add(&table, MsgType::Add);
    batch.add(&table, MsgType::Del);
    send(batch.finalize())
}

pub fn table_exists() -> Result<bool, NetlinkError> {
    dump_retrying(table_exists_once)
}

fn table_exists_once() -> Result<bool, NetlinkError> {
    let socket = open()?;
    let seq = 1;
    socket
        .send(&nftnl::table::get_tables_nlmsg(seq))
        .map_err(NetlinkError::Send)?;
    let mut tables = std::collections::HashSet::new();
    let mut buf = AlignedBuf::new();
    loop {
        let n = recv(&socket, &mut buf)?;
        match mnl::cb_run2(
            &buf.0[..n],
            seq,
            socket.portid(),
            nftnl::table::get_tables_cb,
            &mut tables,
        ) {
            Ok(mnl::CbResult::Stop) => break,
            Ok(mnl::CbResult::Ok) => {}
            Err(e) => return Err(refused(e)),
        }
    }
    Ok(tables
        .iter()
        .any(|t| t.as_bytes() == plan::TABLE.as_bytes()))
}

/// One client's counter in an accounting set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientCount {
    pub client: IpAddr,
    pub packets: u64,
    pub bytes: u64,
}

/// Reads every element of a dynamic accounting set with its counter.
pub fn read_accounting(set_name: &str, family: Family) -> Result<Vec<ClientCount>, NetlinkError> {
    dump_retrying(|| read_accounting_once(set_name, family))
}

fn read_accounting_once(set_name: &str, family: Family) -> Result<Vec<ClientCount>, NetlinkError> {
    let socket = open()?;
    let seq = 7;
    let (request, len) = set_dump_request(seq, Some(set_name))?;
    socket.send(&request.0[..len]).map_err(NetlinkError::Send)?;

    // SAFETY: a fresh set object that collects the parsed elements; freed below.
    let collected = unsafe { alloc(sys::nftnl_set_alloc())? };
    let mut buf = AlignedBuf::new();
    let result = (|| {
        loop {
            let n = recv(&socket, &mut buf)?;
            let mut target = collected;
            match mnl::cb_run2(
                &buf.0[..n],
                seq,
                socket.portid(),
                parse_elems_cb,
                &mut target,
            ) {
                Ok(mnl::CbResult::Stop) => return Ok(()),
                Ok(mnl::CbResult::Ok) => {}
                Err(e) => return Err(refused(e)),
            }
        }
    })();
    let mut out = Vec::new();
    if result.is_ok() {
        let mut ctx = (family, &mut out);
        // SAFETY: `collected` is a valid set filled by nftnl_set_elems_nlmsg_parse; the
        // callback only reads elements while the set is alive and writes into `ctx`,
        // which outlives the call.
        unsafe {
            sys::nftnl_set_elem_foreach(
                collected.as_ptr(),
                Some(elem_cb),
                (&mut ctx as *mut (Family, &mut Vec<ClientCount>)).cast(),
            );
        }
    }
    // SAFETY: allocated above and no longer used.
    unsafe { sys::nftnl_set_free(collected.as_ptr()) };
    result.map(|()| out)
}

fn parse_elems_cb(msg: &libc::nlmsghdr, set: &mut NonNull<sys::nftnl_set>) -> libc::c_int {
    // SAFETY: mnl hands us a complete, validated netlink message; nftnl parses it into
    // the set we own, appending elements.
    unsafe { sys::nftnl_set_elems_nlmsg_parse(msg, set.as_ptr()) };
    mnl_sys_cb_ok()
}

fn mnl_sys_cb_ok() -> libc::c_int {
    1 // MNL_CB_OK
}

unsafe extern "C" fn elem_cb(elem: *mut sys::nftnl_set_elem, data: *mut c_void) -> libc::c_int {
    // SAFETY: `data` is the `(Family, &mut Vec)` passed by read_accounting, alive for the
    // whole foreach; `elem` is a valid element of the set being iterated.
    unsafe {
        let (family, out) = &mut *data.cast::<(Family, &mut Vec<ClientCount>)>();
        let mut len = 0u32;
        let key = sys::nftnl_set_elem_get(elem, sys::NFTNL_SET_ELEM_KEY as u16, &mut len);
        if key.is_null() {
            return 0;
        }
        let bytes = std::slice::from_raw_parts(key.cast::<u8>(), len as usize);
        let client = match (*family, bytes.len()) {
            (Family::V4, 4) => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
            (Family::V6, 16) => {
                let mut a = [0u8; 16];
                a.copy_from_slice(bytes);
                IpAddr::V6(Ipv6Addr::from(a))
            }
            _ => return 0,
        };
        let mut counts = (0u64, 0u64);
        sys::nftnl_set_elem_expr_foreach(
            elem,
            Some(counter_cb),
            (&mut counts as *mut (u64, u64)).cast(),
        );
        out.push(ClientCount {
            client,
            packets: counts.0,
            bytes: counts.1,
        });
        0
    }
}

unsafe extern "C" fn counter_cb(expr: *mut sys::nftnl_expr, data: *mut c_void) -> libc::c_int {
    // SAFETY: `data` is the `(u64, u64)` of elem_cb, alive for this foreach; `expr` is a
    // valid expression of the element; the name string is owned by nftnl.
    unsafe {
        let name = sys::nftnl_expr_get_str(expr, sys::NFTNL_EXPR_NAME as u16);
        if !name.is_null() && std::ffi::CStr::from_ptr(name).to_bytes() == b"counter" {
            let counts = &mut *data.cast::<(u64, u64)>();
            counts.0 = sys::nftnl_expr_get_u64(expr, sys::NFTNL_EXPR_CTR_PACKETS as u16);
            counts.1 = sys::nftnl_expr_get_u64(expr, sys::NFTNL_EXPR_CTR_BYTES as u16);
        }
    }
    0
}

/// A named set of the plan, typed by address family for nftnl.
enum NamedSet<'t> {
    V4(Set<'t, Ipv4Addr>),
    V6(Set<'t, Ipv6Addr>),
}

impl<'t> NamedSet<'t> {
    fn new(spec: &SetSpec, id: u32, table: &'t Table) -> Result<Self, NetlinkError> {
        let name = cstr(&spec.name)?;
        let set = match spec.family {
            Family::V4 => NamedSet::V4(Set::new_named(&name, id, table, ProtoFamily::Inet)),
            Family::V6 => NamedSet::V6(Set::new_named(&name, id, table, ProtoFamily::Inet)),
        };
        let ptr = set.ptr();
        match &spec.kind {
            SetKind::Interval(ranges) => {
                // SAFETY: `ptr` is the live set nftnl allocated above; setting a u32
                // attribute copies the value.
                unsafe {
                    sys::nftnl_set_set_u32(
                        ptr,
                        sys::NFTNL_SET_FLAGS as u16,
                        libc::NFT_SET_INTERVAL as u32,
                    )
                };
                let width = if spec.family == Family::V4 { 4 } else { 16 };
                for (key, end) in plan::interval_elements(ranges, spec.family) {
                    // SAFETY: `ptr` is the set allocated above, owned by `set` and not
                    // shared yet.
                    unsafe { add_elem(ptr, &key_bytes(key, width), end) };
                }
            }
            SetKind::Timed(elements) => {
                // SAFETY: as above; NFT_SET_TIMEOUT lets elements carry a lifetime.
                unsafe {
                    sys::nftnl_set_set_u32(
                        ptr,
                        sys::NFTNL_SET_FLAGS as u16,
                        libc::NFT_SET_TIMEOUT as u32,
                    )
                };
                let width = if spec.family == Family::V4 { 4 } else { 16 };
                for &(addr, ttl) in elements {
                    // SAFETY: as above.
                    unsafe { add_timed_elem(ptr, &key_bytes(addr, width), ttl) };
                }
            }
            SetKind::Accounting { size, idle_secs } => {
                // NFT_SET_EVAL marks a set filled from the packet path; with a default
                // timeout, each `update` from a packet renews its element's.
                let flags = match idle_secs {
                    0 => libc::NFT_SET_EVAL,
                    _ => libc::NFT_SET_EVAL | libc::NFT_SET_TIMEOUT,
                };
                // SAFETY: as above; u32 and u64 attributes are copied.
                unsafe {
                    sys::nftnl_set_set_u32(ptr, sys::NFTNL_SET_FLAGS as u16, flags as u32);
                    sys::nftnl_set_set_u32(ptr, sys::NFTNL_SET_DESC_SIZE as u16, *size);
                    if *idle_secs > 0 {
                        sys::nftnl_set_set_u64(
                            ptr,
                            sys::NFTNL_SET_TIMEOUT as u16,
                            u64::from(*idle_secs) * 1000,
                        );
                    }
                }
            }
        }
        Ok(set)
    }

    fn ptr(&self) -> *mut sys::nftnl_set {
        match self {
            NamedSet::V4(s) => s.as_ptr().as_ptr(),
            NamedSet::V6(s) => s.as_ptr().as_ptr(),
        }
    }

    fn name(&self) -> &std::ffi::CStr {
        match self {
            NamedSet::V4(s) => s.get_name(),
            NamedSet::V6(s) => s.get_name(),
        }
    }

    fn id(&self) -> u32 {
        match self {
            NamedSet::V4(s) => s.get_id(),
            NamedSet::V6(s) => s.get_id(),
        }
    }

    /// The set, then (in place) the flush of its old elements, then its elements.
    fn add_to(&self, batch: &mut Batch, flush: Option<&ElemUpdate>) {
        match self {
            NamedSet::V4(s) => batch.add(s, MsgType::Add),
            NamedSet::V6(s) => batch.add(s, MsgType::Add),
        }
        if let Some(flush) = flush {
            batch.add(flush, MsgType::Del);
        }
        match self {
            NamedSet::V4(s) => batch.add_iter(s.elems_iter(), MsgType::Add),
            NamedSet::V6(s) => batch.add_iter(s.elems_iter(), MsgType::Add),
        }
    }
}

fn key_bytes(v: u128, width: usize) -> Vec<u8> {
    v.to_be_bytes()[16 - width..].to_vec()
}

/// Adds one element (a key, an END flag for an interval's end) to an nftnl set.
///
/// # Safety
/// `set` must point to a live nftnl set that nothing else uses during the call; the set
/// takes ownership of the new element.
unsafe fn add_elem(set: *mut sys::nftnl_set, key: &[u8], end: bool) {
    // SAFETY: `set` is live (the caller's contract); the element is allocated here, its
    // key copied from `key` by nftnl_set_elem_set, and ownership passes to the set on add.
    unsafe {
        let Some(elem) = NonNull::new(sys::nftnl_set_elem_alloc()) else {
            std::process::abort();
        };
        sys::nftnl_set_elem_set(
            elem.as_ptr(),
            sys::NFTNL_SET_ELEM_KEY as u16,
            key.as_ptr().cast(),
            key.len() as u32,
        );
        if end {
            sys::nftnl_set_elem_set_u32(
                elem.as_ptr(),
                sys::NFTNL_SET_ELEM_FLAGS as u16,
                libc::NFT_SET_ELEM_INTERVAL_END as u32,
            );
        }
        sys::nftnl_set_elem_add(set, elem.as_ptr());
    }
}

/// Adds one element with a timeout to an nftnl set.
///
/// # Safety
/// As for `add_elem`: `set` must point to a live nftnl set used by nothing else meanwhile.
unsafe fn add_timed_elem(set: *mut sys::nftnl_set, key: &[u8], ttl: Duration) {
    // SAFETY: as in add_elem; the timeout is a plain u64 (milliseconds) copied by nftnl.
    unsafe {
        let Some(elem) = NonNull::new(sys::nftnl_set_elem_alloc()) else {
            std::process::abort();
        };
        sys::nftnl_set_elem_set(
            elem.as_ptr(),
            sys::NFTNL_SET_ELEM_KEY as u16,
            key.as_ptr().cast(),
            key.len() as u32,
        );
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1000);
        sys::nftnl_set_elem_set_u64(elem.as_ptr(), sys::NFTNL_SET_ELEM_TIMEOUT as u16, ms);
        // The expiration too: on an element that already exists, the kernel (6.12+)
        // renews its lifetime from this attribute; the timeout alone is ignored there.
        sys::nftnl_set_elem_set_u64(elem.as_ptr(), sys::NFTNL_SET_ELEM_EXPIRATION as u16, ms);
        sys::nftnl_set_elem_add(set, elem.as_ptr());
    }
}

/// Elements per NEWSETELEM message: nftnl writes a message without bounds checks, so
/// each must stay well inside one batch page (~48 bytes per element here).
const ELEMS_PER_MSG: usize = 512;

/// Adds or refreshes addresses in a timed set, outside a full apply. Sent without
/// NLM_F_EXCL, so an address already there gets its timeout renewed instead of failing
/// the batch (kernels since 6.12 update the timeout of an existing element).
pub fn update_timed(
    set_name: &str,
    family: Family,
    elements: &[(IpAddr, Duration)],
) -> Result<(), NetlinkError> {
    if elements.is_empty() {
        return Ok(());
    }
    let table = cstr(plan::TABLE)?;
    let name = cstr(set_name)?;
    let width = if family == Family::V4 { 4 } else { 16 };
    let mut messages = Vec::new();
    for chunk in elements.chunks(ELEMS_PER_MSG) {
        let msg = ElemUpdate::new(&table, &name)?;
        for &(ip, ttl) in chunk {
            let v = match ip {
                IpAddr::V4(a) => u128::from(u32::from(a)),
                IpAddr::V6(a) => u128::from(a),
            };
            // SAFETY: `msg` owns this live set until it is dropped after the send.
            unsafe { add_timed_elem(msg.set.as_ptr(), &key_bytes(v, width), ttl) };
        }
        messages.push(msg);
    }
    let mut batch = Batch::new();
    for m in &messages {
        batch.add(m, MsgType::Add);
    }
    send(batch.finalize())
}

/// Changes only the elements of interval sets, in one batch: every removal first, then
/// every addition, so a range that moves never overlaps its old self. What a toggle or
/// reload that touches k ranges costs is proportional to k, not to the table.
pub fn update_elements(diffs: &[plan::ElementDiff]) -> Result<(), NetlinkError> {
    let (removals, additions) = element_updates(diffs)?;
    if removals.is_empty() && additions.is_empty() {
        return Ok(());
    }
    let mut batch = Batch::new();
    for m in &removals {
        batch.add(m, MsgType::Del);
    }
    for m in &additions {
        batch.add(m, MsgType::Add);
    }
    send(batch.finalize())
}

/// The messages that remove and add the elements of `diffs`.
type ElemMessages = (Vec<ElemUpdate>, Vec<ElemUpdate>);

fn element_updates(diffs: &[plan::ElementDiff]) -> Result<ElemMessages, NetlinkError> {
    let table = cstr(plan::TABLE)?;
    let mut removals = Vec::new();
    let mut additions = Vec::new();
    for d in diffs {
        let name = cstr(&d.set)?;
        let width = if d.family == Family::V4 { 4 } else { 16 };
        for (elements, into) in [(&d.remove, &mut removals), (&d.add, &mut additions)] {
            for chunk in elements.chunks(ELEMS_PER_MSG) {
                let msg = ElemUpdate::new(&table, &name)?;
                for &(key, end) in chunk {
                    // SAFETY: `msg` owns this live set until it is dropped after the send.
                    unsafe { add_elem(msg.set.as_ptr(), &key_bytes(key, width), end) };
                }
                into.push(msg);
            }
        }
    }
    Ok((removals, additions))
}

/// Elements of a set named by table and name: added (NEWSETELEM with CREATE but not
/// EXCL, so existing ones are renewed) or deleted (DELSETELEM; with no elements, a flush).
struct ElemUpdate {
    set: NonNull<sys::nftnl_set>,
}

impl ElemUpdate {
    fn new(table: &std::ffi::CStr, name: &std::ffi::CStr) -> Result<Self, NetlinkError> {
        // SAFETY: a fresh set object; string attributes are copied. Freed in Drop.
        unsafe {
            let set = alloc(sys::nftnl_set_alloc())?;
            sys::nftnl_set_set_str(set.as_ptr(), sys::NFTNL_SET_TABLE as u16, table.as_ptr());
            sys::nftnl_set_set_str(set.as_ptr(), sys::NFTNL_SET_NAME as u16, name.as_ptr());
            sys::nftnl_set_set_u32(
                set.as_ptr(),
                sys::NFTNL_SET_FAMILY as u16,
                libc::NFPROTO_INET as u32,
            );
            Ok(ElemUpdate { set })
        }
    }
}

impl Drop for ElemUpdate {
    fn drop(&mut self) {
        // SAFETY: allocated in new, freed once here; the set owns its elements.
        unsafe { sys::nftnl_set_free(self.set.as_ptr()) };
    }
}

// SAFETY: write() only builds one message of at most ELEMS_PER_MSG elements into the
// batch buffer nftnl hands us, which holds a full page.
unsafe impl nftnl::NlMsg for ElemUpdate {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, msg_type: MsgType) {
        let (kind, flags) = match msg_type {
            MsgType::Add => (
                libc::NFT_MSG_NEWSETELEM,
                libc::NLM_F_CREATE | libc::NLM_F_ACK,
            ),
            MsgType::Del => (libc::NFT_MSG_DELSETELEM, libc::NLM_F_ACK),
        };
        // SAFETY: see the impl comment; the header builder and payload builder write
        // within the buffer and the set outlives the call.
        unsafe {
            let nlh = sys::nftnl_nlmsg_build_hdr(
                buf.cast(),
                kind as u16,
                libc::NFPROTO_INET as u16,
                flags as u16,
                seq,
            );
            sys::nftnl_set_elems_nlmsg_build_payload(nlh, self.set.as_ptr());
        }
    }
}

fn build_rule<'c>(
    chain: &'c Chain<'_>,
    spec: &RuleSpec,
    sets: &[NamedSet<'_>],
) -> Result<Rule<'c>, NetlinkError> {
    let find = |name: &str| sets.iter().find(|s| s.name().to_bytes() == name.as_bytes());
    let mut rule = Rule::new(chain);
    for (iface, incoming) in [(&spec.via.iif, true), (&spec.via.oif, false)] {
        let Some(iface) = iface else { continue };
        // Interface names compare as the kernel stores them: IFNAMSIZ bytes, NUL-padded.
        let mut padded = [0u8; libc::IFNAMSIZ];
        let n = iface.len().min(libc::IFNAMSIZ - 1);
        padded[..n].copy_from_slice(&iface.as_bytes()[..n]);
        if incoming {
            rule.add_expr(&nft_expr!(meta iifname));
        } else {
            rule.add_expr(&nft_expr!(meta oifname));
        }
        rule.add_expr(&nft_expr!(cmp == &padded[..]));
    }
    // In an inet table every rule must pin the family before loading an address.
    let proto = match spec.family {
        Family::V4 => libc::NFPROTO_IPV4 as u8,
        Family::V6 => libc::NFPROTO_IPV6 as u8,
    };
    rule.add_expr(&nft_expr!(meta nfproto));
    rule.add_expr(&nft_expr!(cmp == proto));
    if let Some((name, negate)) = &spec.saddr {
        let set = find(name).ok_or_else(|| NetlinkError::BadName(name.clone()))?;
        rule.add_expr(&address(spec.family, true));
        rule.add_expr(&SetLookup {
            name: set.name().to_owned(),
            id: set.id(),
            invert: *negate,
        });
    }
    if let Some(name) = &spec.daddr {
        let daddr = find(name).ok_or_else(|| NetlinkError::BadName(name.clone()))?;
        rule.add_expr(&address(spec.family, false));
        rule.add_expr(&SetLookup {
            name: daddr.name().to_owned(),
            id: daddr.id(),
            invert: false,
        });
    }
    if let Some(l4) = spec.l4 {
        let proto = match l4 {
            L4::Tcp => libc::IPPROTO_TCP as u8,
            L4::Udp => libc::IPPROTO_UDP as u8,
        };
        rule.add_expr(&nft_expr!(meta l4proto));
        rule.add_expr(&nft_expr!(cmp == proto));
        if let Some(port) = spec.dport {
            match l4 {
                L4::Tcp => rule.add_expr(&nft_expr!(payload tcp dport)),
                L4::Udp => rule.add_expr(&nft_expr!(payload udp dport)),
            }
            // Ports are big-endian on the wire; cmp compares raw bytes.
            rule.add_expr(&nft_expr!(cmp == &port.to_be_bytes()[..]));
        }
    }
    if spec.not_local {
        rule.add_expr(&FibDaddrType);
        rule.add_expr(&nft_expr!(cmp != libc::RTN_LOCAL as u32));
    }
    match &spec.action {
        Action::Accept => rule.add_expr(&nft_expr!(verdict accept)),
        Action::Redirect { port } => {
            rule.add_expr(&nft_expr!(counter));
            rule.add_expr(&nftnl::expr::Immediate::new(
                port.to_be(),
                nftnl::expr::Register::Reg1,
            ));
            rule.add_expr(&RedirectPort);
        }
        Action::Account { set } => {
            let acct = find(set).ok_or_else(|| NetlinkError::BadName(set.clone()))?;
            rule.add_expr(&address(spec.family, true));
            rule.add_expr(&DynsetCount {
                name: acct.name().to_owned(),
                id: acct.id(),
            });
        }
        Action::RejectTcp => {
            rule.add_expr(&nft_expr!(counter));
            rule.add_expr(&Verdict::Reject(RejectionType::TcpRst));
        }
        Action::Reject => {
            rule.add_expr(&nft_expr!(counter));
            rule.add_expr(&Verdict::Reject(RejectionType::Icmp(
                IcmpCode::AdminProhibited,
            )));
        }
        Action::Drop => {
            rule.add_expr(&nft_expr!(counter));
            rule.add_expr(&nft_expr!(verdict drop));
        }
    }
    rule.set_comment(cstr(&spec.comment)?)
        .map_err(|_| NetlinkError::BadName(spec.comment.clone()))?;
    Ok(rule)
}

/// Loads the source or destination address into register 1.
fn address(family: Family, source: bool) -> nftnl::expr::Payload {
    match (family, source) {
        (Family::V4, true) => nft_expr!(payload ipv4 saddr),
        (Family::V4, false) => nft_expr!(payload ipv4 daddr),
        (Family::V6, true) => nft_expr!(payload ipv6 saddr),
        (Family::V6, false) => nft_expr!(payload ipv6 daddr),
    }
}

/// `[ lookup reg 1 set NAME (0x1 = inverted) ]`: nftnl's Lookup cannot invert.
struct SetLookup {
    name: CString,
    id: u32,
    invert: bool,
}

impl Expression for SetLookup {
    fn to_expr(&self, _rule: &Rule) -> NonNull<sys::nftnl_expr> {
        // SAFETY: a fresh expression; string attributes are copied by nftnl, so `name`
        // need not outlive it. The caller (Rule::add_expr) takes ownership.
        unsafe {
            let expr = new_expr(c"lookup");
            let e = expr.as_ptr();
            sys::nftnl_expr_set_u32(
                e,
                sys::NFTNL_EXPR_LOOKUP_SREG as u16,
                libc::NFT_REG_1 as u32,
            );
            sys::nftnl_expr_set_str(e, sys::NFTNL_EXPR_LOOKUP_SET as u16, self.name.as_ptr());
            sys::nftnl_expr_set_u32(e, sys::NFTNL_EXPR_LOOKUP_SET_ID as u16, self.id);
            if self.invert {
                sys::nftnl_expr_set_u32(
                    e,
                    sys::NFTNL_EXPR_LOOKUP_FLAGS as u16,
                    libc::NFT_LOOKUP_F_INV as u32,
                );
            }
            expr
        }
    }
}

/// `[ fib daddr type => reg 1 ]`: the address type (local, unicast...) of the destination.
struct FibDaddrType;

/// From linux/netfilter/nf_tables.h (not in libc): NFT_FIB_RESULT_ADDRTYPE, NFTA_FIB_F_DADDR.
const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
const NFTA_FIB_F_DADDR: u32 = 1 << 1;
/// From linux/netfilter/nf_nat.h: the port range in the registers applies.
const NF_NAT_RANGE_PROTO_SPECIFIED: u32 = 1 << 1;

impl Expression for FibDaddrType {
    fn to_expr(&self, _rule: &Rule) -> NonNull<sys::nftnl_expr> {
        // SAFETY: a fresh expression with three u32 attributes; ownership passes to the rule.
        unsafe {
            let expr = new_expr(c"fib");
            let e = expr.as_ptr();
            sys::nftnl_expr_set_u32(e, sys::NFTNL_EXPR_FIB_DREG as u16, libc::NFT_REG_1 as u32);
            sys::nftnl_expr_set_u32(
                e,
                sys::NFTNL_EXPR_FIB_RESULT as u16,
                NFT_FIB_RESULT_ADDRTYPE,
            );
            sys::nftnl_expr_set_u32(e, sys::NFTNL_EXPR_FIB_FLAGS as u16, NFTA_FIB_F_DADDR);
            expr
        }
    }
}

/// `[ redir proto_min reg 1 flags 0x2 ]`: redirect to the port loaded into register 1.
struct RedirectPort;

impl Expression for RedirectPort {
    fn to_expr(&self, _rule: &Rule) -> NonNull<sys::nftnl_expr> {
        // SAFETY: as FibDaddrType.
        unsafe {
            let expr = new_expr(c"redir");
            let e = expr.as_ptr();
            sys::nftnl_expr_set_u32(
                e,
                sys::NFTNL_EXPR_REDIR_REG_PROTO_MIN as u16,
                libc::NFT_REG_1 as u32,
            );
            sys::nftnl_expr_set_u32(
                e,
                sys::NFTNL_EXPR_REDIR_FLAGS as u16,
                NF_NAT_RANGE_PROTO_SPECIFIED,
            );
            expr
        }
    }
}

/// `[ dynset update reg_key 1 set NAME expr [ counter ] ]`.
struct DynsetCount {
    name: CString,
    id: u32,
}

impl Expression for DynsetCount {
    fn to_expr(&self, _rule: &Rule) -> NonNull<sys::nftnl_expr> {
        // SAFETY: as in SetLookup; the nested counter expression is handed to the dynset
        // expression, which frees it with itself.
        unsafe {
            let expr = new_expr(c"dynset");
            let e = expr.as_ptr();
            sys::nftnl_expr_set_u32(
                e,
                sys::NFTNL_EXPR_DYNSET_SREG_KEY as u16,
                libc::NFT_REG_1 as u32,
            );
            sys::nftnl_expr_set_u32(
                e,
                sys::NFTNL_EXPR_DYNSET_OP as u16,
                libc::NFT_DYNSET_OP_UPDATE as u32,
            );
            sys::nftnl_expr_set_str(
                e,
                sys::NFTNL_EXPR_DYNSET_SET_NAME as u16,
                self.name.as_ptr(),
            );
            sys::nftnl_expr_set_u32(e, sys::NFTNL_EXPR_DYNSET_SET_ID as u16, self.id);
            let counter = new_expr(c"counter");
            sys::nftnl_expr_set(
                e,
                sys::NFTNL_EXPR_DYNSET_EXPR as u16,
                counter.as_ptr().cast(),
                0,
            );
            expr
        }
    }
}

/// # Safety
/// `name` must be an expression type libnftnl knows.
unsafe fn new_expr(name: &std::ffi::CStr) -> NonNull<sys::nftnl_expr> {
    // SAFETY: nftnl_expr_alloc returns null only on allocation failure, which we treat
    // like Rust's own out-of-memory: abort.
    match NonNull::new(unsafe { sys::nftnl_expr_alloc(name.as_ptr()) }) {
        Some(e) => e,
        None => std::process::abort(),
    }
}

fn alloc<T>(ptr: *mut T) -> Result<NonNull<T>, NetlinkError> {
    NonNull::new(ptr)
        .ok_or_else(|| NetlinkError::Socket(io::Error::from(io::ErrorKind::OutOfMemory)))
}

fn cstr(s: &str) -> Result<CString, NetlinkError> {
    CString::new(s).map_err(|_| NetlinkError::BadName(s.to_owned()))
}

fn open() -> Result<mnl::Socket, NetlinkError> {
    use nix::sys::socket::{setsockopt, sockopt};
    let socket = mnl::Socket::new(mnl::Bus::Netfilter).map_err(NetlinkError::Socket)?;
    let fd = borrowed(&socket);
    // Failure (no CAP_NET_ADMIN) only leaves the default buffer sizes, which suffice for
    // all but very large batches; the apply itself then says what is missing.
    let _ = setsockopt(&fd, sockopt::SndBufForce, &SOCKET_BUFFER);
    let _ = setsockopt(&fd, sockopt::RcvBufForce, &SOCKET_BUFFER);
    Ok(socket)
}

/// The socket's descriptor, borrowed for as long as the socket lives.
fn borrowed(socket: &mnl::Socket) -> std::os::fd::BorrowedFd<'_> {
    // SAFETY: `socket` owns this open descriptor and outlives the borrow (the lifetime
    // ties the two together); mnl::Socket offers only AsRawFd, not AsFd.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(socket.as_raw_fd()) }
}

/// Sends the whole batch in one `sendmsg` (mnl's send_all sends each page separately, and
/// the kernel then sees an unterminated batch) and checks every acknowledgement.
fn send(batch: FinalizedBatch) -> Result<(), NetlinkError> {
    let socket = open()?;
    let mut whole = Vec::new();
    for page in &batch {
        whole.extend_from_slice(page);
    }
    socket.send(&whole).map_err(NetlinkError::Send)?;
    let portid = socket.portid();
    let mut expected = batch.sequence_numbers();
    let mut buf = AlignedBuf::new();
    while !expected.is_empty() {
        let n = recv(&socket, &mut buf)?;
        for msg in mnl::NlMessages::new(&buf.0[..n]) {
            let msg = msg.map_err(refused)?;
            // The kernel sends fewer ACKs than messages after an error: stop at the first.
            match mnl::cb_run(msg, expected.start, portid) {
                Ok(_) => expected.start += 1,
                Err(e) => return Err(refused(e)),
            }
        }
    }
    Ok(())
}

fn recv(socket: &mnl::Socket, buf: &mut AlignedBuf) -> Result<usize, NetlinkError> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(borrowed(socket), PollFlags::POLLIN)];
    let timeout = PollTimeout::try_from(ACK_TIMEOUT).unwrap_or(PollTimeout::MAX);
    match poll(&mut fds, timeout) {
        Ok(n) if n > 0 => socket.recv_raw(&mut buf.0).map_err(NetlinkError::Send),
        _ => Err(NetlinkError::Timeout(ACK_TIMEOUT)),
    }
}

/// Netlink parsing needs buffers aligned for `nlmsghdr`.
#[repr(C, align(8))]
struct AlignedBuf([u8; 1 << 16]);

impl AlignedBuf {
    fn new() -> Box<Self> {
        Box::new(AlignedBuf([0; 1 << 16]))
    }
}
