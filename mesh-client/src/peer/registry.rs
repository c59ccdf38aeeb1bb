//! What a device knows of the mesh's devices beyond its own: the authority's revocation
//! statements and device certificates it learned from hubs and peers, applied to every
//! [`PeerTrust`] it uses.
//!
//! Both count only when the authority a remote's word is judged by signed them: the one
//! pinned at enrollment for a hub, the peer trust's for a peer. Whoever relays them, nobody but
//! that authority can make one. Every trust the client uses (those of
//! [`MeshClient::peer_config`](crate::MeshClient::peer_config), of its listeners, of its
//! discovery and of its peer remotes) is handed everything of its authority:
//!
//! * a revocation heard from the hub refuses the device's next handshake, request and pushed
//!   version on every peer connection at once (statements are also saved in the store);
//! * a certificate heard from the hub or a peer lets the device tell who signed a version a
//!   peer relays, so that a Reader's device can carry an Owner's change to another device,
//!   which accepts it as the Owner's write (certificates are asked for again at each whole
//!   session, and not saved).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use mesh_core::trust::{
    DeviceCertificate, MemoryKeyring, PublicKey, Revocation, MAX_CERTIFICATES_PER_ANSWER,
    MAX_REVOCATIONS_PER_ANSWER,
};

use crate::peer::PeerTrust;
use crate::transport::serve::lock_ring;

/// The most statements, and separately the most certificates, a device keeps per authority
/// (each is the authority's, so only an authority that revoked or certified this many devices
/// of the users a device shares folders with fills it; beyond it, new ones still apply to the
/// trusts in use but are not kept).
const MAX_KEPT_REVOCATIONS: usize = 65_536;

/// The client-wide registry: everything learned per authority, and the live trusts.
#[derive(Default)]
pub(crate) struct TrustRegistry {
    inner: Mutex<Known>,
}

#[derive(Default)]
struct Known {
    /// Per authority, a keyring of every statement and certificate learned from it: the one
    /// place the rules of what counts as news live ([`MemoryKeyring::learn`],
    /// [`add_certificate`]), and what a trust adopted later starts from.
    learned: HashMap<PublicKey, MemoryKeyring>,
    /// Trusts in use; dropped ones are pruned as others are adopted.
    trusts: Vec<Weak<Mutex<MemoryKeyring>>>,
}

impl TrustRegistry {
    /// A registry that starts from `saved` statements (read from the store: each checked
    /// again against the authority that signed it, and dropped if it does not verify).
    pub fn new(saved: Vec<Revocation>) -> Self {
        let mut known = Known::default();
        for r in saved {
            let authority = r.authority;
            known.learn(&authority, r);
        }
        TrustRegistry {
            inner: Mutex::new(known),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Known> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands `trust` everything known of its authority, and everything learned later.
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
        if let Some(learned) = known.learned.get(r.authority()) {
            for c in learned.certificates() {
                let _ = add_certificate(&mut r, c);
            }
            for statement in learned.revocations() {
                let _ = r.learn(statement);
            }
        }
        drop(r);
        known.trusts.push(Arc::downgrade(ring));
    }

    /// Whether any trust is in use: the client serves or syncs with peers, and asks its
    /// remotes for the certificates it needs to judge their pages.
    pub fn in_use(&self) -> bool {
        self.lock().trusts.iter().any(|w| w.strong_count() > 0)
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

    /// Every statement kept, of every authority (what the device saves).
    pub fn revocations(&self) -> Vec<Revocation> {
        let known = self.lock();
        known
            .learned
            .values()
            .flat_map(MemoryKeyring::revocations)
            .collect()
    }

    /// Takes the statements a remote judged by `pinned` sent (at most
    /// [`MAX_REVOCATIONS_PER_ANSWER`]): those `pinned` signed apply to every trust of that
    /// authority. Returns those that told this device something new (to save and report).
    pub fn learn(&self, pinned: &PublicKey, statements: Vec<Revocation>) -> Vec<Revocation> {
        let mut known = self.lock();
        let new: Vec<Revocation> = statements
            .into_iter()
            .take(MAX_REVOCATIONS_PER_ANSWER)
            .filter(|r| known.learn(pinned, r.clone()))
            .collect();
        if !new.is_empty() {
            known.each_ring(pinned, |ring| {
                for r in &new {
                    let _ = ring.learn(r.clone());
                }
            });
        }
        new
    }

    /// Takes the certificates a remote judged by `pinned` sent (at most
    /// [`MAX_CERTIFICATES_PER_ANSWER`]): those `pinned` signed are given to every trust of
    /// that authority, unless it holds one for the device that lasts as long. Returns how
    /// many were new.
    pub fn learn_certificates(
        &self,
        pinned: &PublicKey,
        certificates: Vec<DeviceCertificate>,
    ) -> usize {
        let mut known = self.lock();
        let learned = known
            .learned
            .entry(*pinned)
            .or_insert_with(|| MemoryKeyring::new(*pinned));
        let mut new = Vec::new();
        for c in certificates.into_iter().take(MAX_CERTIFICATES_PER_ANSWER) {
            if learned.certificate_count() >= MAX_KEPT_REVOCATIONS
                && learned.device(&c.device).is_none()
            {
                // Not kept, but the trusts in use still get it.
                if c.verify(pinned).is_ok() {
                    tracing::warn!(device = %c.device, "too many certificates to keep one more");
                    new.push(c);
                }
                continue;
            }
            match add_certificate(learned, &c) {
                Ok(true) => new.push(c),
                Ok(false) => {}
                Err(_) => {
                    tracing::warn!(device = %c.device, "a certificate not issued by the pinned authority was ignored");
                }
            }
        }
        if !new.is_empty() {
            known.each_ring(pinned, |ring| {
                for c in &new {
                    let _ = add_certificate(ring, c);
                }
            });
        }
        new.len()
    }
}

/// Gives `ring` a certificate unless it holds one for the device that lasts as long; a
/// device known with another user or key keeps that one (the handshake refuses whoever
/// presents the other). `Ok(true)` when it was added; an error when `ring`'s authority did
/// not issue it.
fn add_certificate(ring: &mut MemoryKeyring, c: &DeviceCertificate) -> mesh_core::Result<bool> {
    if let Some(held) = ring.device(&c.device) {
        let h = &held.certificate;
        if h.not_after >= c.not_after || h.user != c.user || h.key != c.key {
            return Ok(false);
        }
    }
    ring.add(c.clone())?;
    Ok(true)
}

impl Known {
    /// Takes a statement judged by `pinned` into what is learned of that authority: whether it
    /// is news to apply (signed by `pinned`, for a device not known revoked as early). Past
    /// [`MAX_KEPT_REVOCATIONS`] a new device's statement is applied but not kept.
    fn learn(&mut self, pinned: &PublicKey, r: Revocation) -> bool {
        let learned = self
            .learned
            .entry(*pinned)
            .or_insert_with(|| MemoryKeyring::new(*pinned));
        if learned.revocation_count() >= MAX_KEPT_REVOCATIONS
            && learned.revoked_at(&r.device).is_none()
        {
            let valid = r.verify(pinned).is_ok();
            if valid {
                tracing::warn!(device = %r.device, "too many revocations to keep one more");
            }
            return valid;
        }
        let device = r.device.clone();
        match learned.learn(r) {
            Ok(news) => news,
            Err(_) => {
                tracing::warn!(%device, "a revocation not signed by the pinned authority was ignored");
                false
            }
        }
    }

    /// Runs `f` on every live trust of `authority`.
    fn each_ring(&self, authority: &PublicKey, mut f: impl FnMut(&mut MemoryKeyring)) {
        for ring in self.trusts.iter().filter_map(Weak::upgrade) {
            let mut ring = lock_ring(&ring);
            if ring.authority() == authority {
                f(&mut ring);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::id::DeviceId;
    use mesh_core::time::Timestamp;
    use mesh_core::trust::{KeyStatus, Keyring as _, SecretKey};

    fn at(s: i64) -> Timestamp {
        Timestamp::from_unix(1_700_000_000 + s).unwrap()
    }

    #[test]
    fn statements_reach_every_trust_of_their_authority_and_only_theirs() {
        let a = SecretKey::from_seed([1; 32]);
        let b = SecretKey::from_seed([2; 32]);
        let registry = TrustRegistry::default();
        assert!(!registry.in_use());
        let early = PeerTrust::new(a.public());
        registry.adopt(&early);
        assert!(registry.in_use());
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
        drop((early, late, other, shared));
        assert!(!registry.in_use());
    }

    #[test]
    fn saved_statements_that_do_not_verify_are_dropped() {
        let a = SecretKey::from_seed([1; 32]);
        let good = Revocation::issue(&a, "ann".parse().unwrap(), "phone".parse().unwrap(), at(0));
        let mut bad = Revocation::issue(&a, "ann".parse().unwrap(), "tv".parse().unwrap(), at(0));
        bad.at = at(-100);
        let registry = TrustRegistry::new(vec![good, bad]);
        let trust = registry.trust_for(a.public());
        assert!(trust.is_revoked(&"phone".parse().unwrap(), at(1)));
        assert!(!trust.is_revoked(&"tv".parse().unwrap(), at(1)));
    }

    #[test]
    fn certificates_of_the_pinned_authority_reach_its_trusts_and_never_replace_a_key() {
        let a = SecretKey::from_seed([1; 32]);
        let rogue = SecretKey::from_seed([2; 32]);
        let registry = TrustRegistry::default();
        let trust = registry.trust_for(a.public());
        let lookup = |t: &PeerTrust, d: &str| lock_ring(t.keyring()).lookup(&d.parse().unwrap());
        let cert = |by: &SecretKey, device: &str, key: u8, until: i64| {
            DeviceCertificate::issue(
                by,
                "bob".parse().unwrap(),
                device.parse().unwrap(),
                SecretKey::from_seed([key; 32]).public(),
                at(0),
                at(until),
            )
        };
        // Another authority's certificate is ignored.
        assert_eq!(
            registry.learn_certificates(&a.public(), vec![cert(&rogue, "desk", 9, 100)]),
            0
        );
        assert_eq!(lookup(&trust, "desk"), KeyStatus::Foreign);
        assert_eq!(
            registry.learn_certificates(&a.public(), vec![cert(&a, "desk", 9, 100)]),
            1
        );
        assert!(matches!(lookup(&trust, "desk"), KeyStatus::Device(d)
            if d.certificate.not_after == at(100)));
        // A shorter one changes nothing; a longer one renews; one with another key is kept
        // aside, never replacing the key the trust holds.
        registry.learn_certificates(&a.public(), vec![cert(&a, "desk", 9, 50)]);
        registry.learn_certificates(&a.public(), vec![cert(&a, "desk", 9, 200)]);
        registry.learn_certificates(&a.public(), vec![cert(&a, "desk", 7, 300)]);
        match lookup(&trust, "desk") {
            KeyStatus::Device(d) => {
                assert_eq!(d.certificate.not_after, at(200));
                assert_eq!(d.certificate.key, SecretKey::from_seed([9; 32]).public());
            }
            other => panic!("{other:?}"),
        }
        // A trust adopted later starts with them.
        let late = PeerTrust::new(a.public());
        registry.adopt(&late);
        assert!(matches!(lookup(&late, "desk"), KeyStatus::Device(_)));
    }
}
