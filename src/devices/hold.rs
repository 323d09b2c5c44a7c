//! Counts of an address not known as a device's wait one round, once.
//!
//! The gateway answers a new address only after resolving its neighbour entry, and the
//! kernel's notification of that entry may reach the registry just after a sweep or a
//! ledger flush reads the counts; taken then, the first queries of a new IPv6 temporary
//! address would stay under the address for good. So the first time an address is read
//! while no device is known for it, its counts wait for the next round (10 s for the
//! tally, `flush_secs` for the ledger); after that it counts as what it is then. The
//! tally and the ledger each keep one (their rounds are independent).

use std::collections::HashMap;
use std::net::IpAddr;

use parking_lot::Mutex;

use super::labels::Identity;

/// Addresses remembered as held at most; past it the memory starts over (an address
/// may then wait once more, which delays its counts by one round and loses nothing).
const MAX_HELD: usize = 65_536;

/// Each held address with the round it was held in: all its counts of that round wait
/// (an address has a row per profile and layer), none of a later one.
#[derive(Default)]
pub struct HoldOnce {
    held: Mutex<(u64, HashMap<IpAddr, u64>)>,
}

impl HoldOnce {
    /// Starts a round (a sweep, a flush): the addresses held before are held no more.
    pub fn next_round(&self) {
        self.held.lock().0 += 1;
    }

    /// Whether `ip`'s counts wait for the next round. `id` is who it is now;
    /// `identity_on` is `[identity] devices`. Loopback addresses never have a neighbour
    /// entry and never wait.
    pub fn hold(&self, ip: IpAddr, id: &Identity, identity_on: bool) -> bool {
        let mut guard = self.held.lock();
        let (round, held) = &mut *guard;
        let unknown = identity_on && !ip.is_loopback() && matches!(id, Identity::Address(_));
        if !unknown {
            held.remove(&ip);
            return false;
        }
        if held.len() >= MAX_HELD && !held.contains_key(&ip) {
            held.clear();
        }
        *held.entry(ip).or_insert(*round) == *round
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::devices::Mac;

    #[test]
    fn an_unknown_address_waits_once_and_a_device_or_loopback_never() {
        let h = HoldOnce::default();
        let ip: IpAddr = "2001:db8::7".parse().unwrap();
        let addr = Identity::Address(ip);
        // Every count of the address in that round waits (one row per profile).
        assert!(h.hold(ip, &addr, true));
        assert!(h.hold(ip, &addr, true));
        h.next_round();
        assert!(!h.hold(ip, &addr, true));
        assert!(!h.hold(ip, &addr, true));
        assert!(!h.hold(ip, &Identity::Device(Mac([2, 0, 0, 0, 0, 7])), true));
        let other: IpAddr = "192.0.2.7".parse().unwrap();
        assert!(!h.hold(other, &Identity::Address(other), false));
        let lo: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(!h.hold(lo, &Identity::Address(lo), true));
    }
}
