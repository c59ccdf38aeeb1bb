//! What a device knows of revoked devices: the authority's signed statements it learned from
//! hubs and peers, kept in its store and applied to every [`PeerTrust`] it uses.
//!
//! A statement counts only when the authority a remote's word is judged by signed it: the one
//! pinned at enrollment for a hub, the peer trust's for a peer. Whoever relays it, nobody but
//! that authority can make one. Every trust the client uses (those of
//! [`MeshClient::peer_config`](crate::MeshClient::peer_config), of its listeners, of its
//! peer remotes) is handed every statement of its authority, so that a revocation heard from
//! the hub refuses the device's next handshake, request and pushed version on every peer
//! connection at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use mesh_core::id::DeviceId;
use mesh_core::trust::{MemoryKeyring, PublicKey, Revocation, MAX_REVOCATIONS_PER_ANSWER};

use crate::peer::PeerTrust;
use crate::transport::serve::lock_ring;

/// The most statements a device keeps (each is the authority's, so only an authority that
/// revoked this many devices of its users fills it; beyond it new ones still apply to the
/// trusts in use but are not kept).
pub(crate) const MAX_KEPT_REVOCATIONS: usize = 65_536;

/// The client-wide registry: statements by authority and device, and the live trusts.
#[derive(Default)]
pub(crate) struct Revocations {
    inner: Mutex<Known>,
}

#[derive(Default)]
struct Known {
    statements: HashMap<(PublicKey, DeviceId), Revocation>,
    /// Trusts in use; dropped ones are pruned as others are adopted.
    trusts: Vec<Weak<Mutex<MemoryKeyring>>>,
}

impl Revocations {
    /// A registry that starts from `saved` (read from the store: each checked again against
    /// the authority that signed it, and dropped if it does not verify).
    pub fn new(saved: Vec<Revocation>) -> Self {
        let mut known = Known::default();
        for r in saved {
            if r.verify(&r.authority).is_ok() {
                known.keep(r);
            }
        }
        Revocations {
            inner: Mutex::new(known),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Known> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands `trust` every statement of its authority, and every later one.
    pub fn adopt(&self, trust: &PeerTrust) {
        let mut known = self.lock();
        known.trusts.retain(|w| w.strong_count() > 0);
        let ring = trust.keyring();
        if known
            .trusts
            .iter()
            .any(|w| w.upgrade().is_some_and(|r| Arc::ptr_eq(&r, ring)))
        {
            return;
        }
        let mut r = lock_ring(ring);
        let authority = *r.authority();
        for ((a, _), statement) in &known.statements {
            if *a == authority {
                // Verified when it was kept, against this very authority.
                let _ = r.learn(statement.clone());
            }
        }
        drop(r);
        known.trusts.push(Arc::downgrade(ring));
    }

    /// The trust in use for `authority`, or a new one (adopted) if none is.
    pub fn trust_for(&self, authority: PublicKey) -> PeerTrust {
        let live = {
            let mut known = self.lock();
            known.trusts.retain(|w| w.strong_count() > 0);
            known
                .trusts
                .iter()
                .filter_map(Weak::upgrade)
                .find(|r| *lock_ring(r).authority() == authority)
        };
        match live {
            Some(ring) => PeerTrust::from_shared(ring),
            None => {
                let trust = PeerTrust::new(authority);
                self.adopt(&trust);
                trust
            }
        }
    }

    /// Takes the statements a remote judged by `pinned` sent (at most
    /// [`MAX_REVOCATIONS_PER_ANSWER`]): those `pinned` signed apply to every trust of that
    /// authority. Returns those that told this device something new (to save and report).
    pub fn learn(&self, pinned: &PublicKey, statements: Vec<Revocation>) -> Vec<Revocation> {
        let mut known = self.lock();
        let mut new = Vec::new();
        for r in statements.into_iter().take(MAX_REVOCATIONS_PER_ANSWER) {
            if r.verify(pinned).is_err() {
                tracing::warn!(device = %r.device, "a revocation not signed by the pinned authority was ignored");
                continue;
            }
            let key = (r.authority, r.device.clone());
            if known.statements.get(&key).is_some_and(|k| k.at <= r.at) {
                continue;
            }
            known.keep(r.clone());
            new.push(r);
        }
        if !new.is_empty() {
            for ring in known.trusts.iter().filter_map(Weak::upgrade) {
                let mut ring = lock_ring(&ring);
                if ring.authority() == pinned {
                    for r in &new {
                        let _ = ring.learn(r.clone());
                    }
                }
            }
        }
        new
    }
}

impl Known {
    fn keep(&mut self, r: Revocation) {
        let key = (r.authority, r.device.clone());
        if self.statements.len() >= MAX_KEPT_REVOCATIONS && !self.statements.contains_key(&key) {
            tracing::warn!(device = %r.device, "too many revocations to keep one more");
            return;
        }
        self.statements.insert(key, r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::time::Timestamp;
    use mesh_core::trust::SecretKey;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_unix(1_700_000_000 + s).unwrap()
    }

    #[test]
    fn statements_reach_every_trust_of_their_authority_and_only_theirs() {
        let a = SecretKey::from_seed([1; 32]);
        let b = SecretKey::from_seed([2; 32]);
        let registry = Revocations::default();
        let early = PeerTrust::new(a.public());
        registry.adopt(&early);
        let other = registry.trust_for(b.public());
        let phone: DeviceId = "phone".parse().unwrap();
        let r = Revocation::issue(&a, "ann".parse().unwrap(), phone.clone(), at(0));
        // Judged by b, a's statement is ignored.
        assert!(registry.learn(&b.public(), vec![r.clone()]).is_empty());
        assert!(!early.is_revoked(&phone, at(1)));
        assert_eq!(
            registry.learn(&a.public(), vec![r.clone()]),
            vec![r.clone()]
        );
        assert!(
            registry.learn(&a.public(), vec![r]).is_empty(),
            "nothing new"
        );
        assert!(early.is_revoked(&phone, at(1)));
        assert!(!other.is_revoked(&phone, at(1)));
        // A trust adopted later starts from what is known; the one in use is shared.
        let late = PeerTrust::new(a.public());
        registry.adopt(&late);
        assert!(late.is_revoked(&phone, at(1)));
        let shared = registry.trust_for(a.public());
        assert!(Arc::ptr_eq(shared.keyring(), early.keyring()));
    }

    #[test]
    fn saved_statements_that_do_not_verify_are_dropped() {
        let a = SecretKey::from_seed([1; 32]);
        let good = Revocation::issue(&a, "ann".parse().unwrap(), "phone".parse().unwrap(), at(0));
        let mut bad = Revocation::issue(&a, "ann".parse().unwrap(), "tv".parse().unwrap(), at(0));
        bad.at = at(-100);
        let registry = Revocations::new(vec![good, bad]);
        let trust = registry.trust_for(a.public());
        assert!(trust.is_revoked(&"phone".parse().unwrap(), at(1)));
        assert!(!trust.is_revoked(&"tv".parse().unwrap(), at(1)));
    }
}
