//! The rule every replica applies to an Ed25519 signature, one at a time or many together.
//!
//! A signature `(R, s)` by key `A` over message `M` is valid when:
//!
//! 1. `s` is a canonical scalar (below the group order ℓ);
//! 2. `A` and `R` are canonical encodings (`y` below 2²⁵⁵ − 19) of curve points, and neither
//!    point has small order (order dividing 8);
//! 3. `[8]([s]B − R − [k]A)` is the identity, with `k` = SHA-512(`R` ‖ `A` ‖ `M`) mod ℓ.
//!
//! Rule 3 is RFC 8032's group equation (§5.1.7), with the cofactor. The cofactor is what lets
//! signatures be checked in batches: a random linear combination of cofactored equations
//! holds exactly when each one does (but for a chance of 2⁻¹²⁸), so a batch accepts exactly
//! the signatures the one-by-one check accepts. Without the cofactor (`[s]B = R + [k]A`), a
//! batch accepts, with a chance of one in two to one in eight, a signature whose `R` carries
//! a small-order part that the single check refuses, and two replicas could then disagree
//! about the same item. Rule 2 refuses the keys and `R` values that would let anyone forge.
//!
//! Every signature an RFC 8032 signer makes passes, and every signature that passed the
//! stricter cofactorless check this crate used before still does.

use std::cell::RefCell;
use std::sync::OnceLock;

use curve25519_dalek::constants::EIGHT_TORSION;
use curve25519_dalek::edwards::CompressedEdwardsY;
use curve25519_dalek::scalar::Scalar;
use ed25519_zebra::{batch, VerificationKey, VerificationKeyBytes};

use super::keys::{PublicKey, Signature};

/// How many checked keys each thread keeps (see [`checked_key`]).
const KEPT_KEYS: usize = 8;

thread_local! {
    /// Keys this thread checked and decompressed lately, the latest used first (valid ones
    /// only, so that keeping them changes no answer).
    static KEYS: RefCell<Vec<([u8; 32], VerificationKey)>> = const { RefCell::new(Vec::new()) };
}

/// Whether `bytes` is a canonical encoding that, should it decode, gives a point without small
/// order (rule 2, but for decoding, which the equation's check does): cheap enough for every
/// `R`, with no point decoded.
///
/// Canonical: the 255-bit `y` is below p = 2²⁵⁵ − 19, which fails only for the 19 values
/// from p up, whose low byte is at least `0xed` with every other bit of `y` set. Small order:
/// a point shares its `y` only with its negation, and the negation of a small-order point has
/// small order too, so the small-order points are exactly those whose `y` is one of the eight
/// small-order points' (of either sign bit; this also refuses the other non-canonical form,
/// `x` = 0 with the sign bit set, which only the points of orders 1 and 2 have).
pub(crate) fn sound_encoding(bytes: &[u8; 32]) -> bool {
    static SMALL: OnceLock<[[u8; 32]; 8]> = OnceLock::new();
    let small = SMALL.get_or_init(|| {
        EIGHT_TORSION.map(|p| {
            let mut y = p.compress().0;
            y[31] &= 0x7f;
            y
        })
    });
    let high = bytes[31] & 0x7f == 0x7f && bytes[1..31].iter().all(|&b| b == 0xff);
    if high && bytes[0] >= 0xed {
        return false;
    }
    let mut y = *bytes;
    y[31] &= 0x7f;
    !small.contains(&y)
}

/// Whether `bytes` is a canonical encoding of a curve point that does not have small order
/// (rule 2).
pub(crate) fn sound_point(bytes: &[u8; 32]) -> bool {
    sound_encoding(bytes) && CompressedEdwardsY(*bytes).decompress().is_some()
}

/// `key` ready for checking, if it is sound (rule 2). Turning a key's 32 bytes into a point
/// costs about a tenth of a check, and a push's items come from a few devices: each thread
/// keeps the last [`KEPT_KEYS`] keys it accepted.
pub(crate) fn checked_key(key: &PublicKey) -> Option<VerificationKey> {
    KEYS.with(|kept| {
        let mut kept = kept.borrow_mut();
        if let Some(i) = kept.iter().position(|(bytes, _)| *bytes == key.0) {
            let hit = kept.remove(i);
            let checked = hit.1;
            kept.insert(0, hit);
            return Some(checked);
        }
        if !sound_point(&key.0) {
            return None;
        }
        let checked = VerificationKey::try_from(key.0).ok()?;
        kept.insert(0, (key.0, checked));
        kept.truncate(KEPT_KEYS);
        Some(checked)
    })
}

/// Rule 2 for a key (see [`PublicKey::is_sound`]).
pub(crate) fn sound_key(key: &PublicKey) -> bool {
    checked_key(key).is_some()
}

/// Rules 1 and 2 for the signature's own half: `s` canonical, `R` soundly encoded (whether it
/// decodes at all is left to the equation's check, which decodes it anyway).
fn sound_signature(sig: &Signature) -> bool {
    let (Some(r), Some(s)) = (sig.0.first_chunk::<32>(), sig.0.last_chunk::<32>()) else {
        return false;
    };
    bool::from(Scalar::from_canonical_bytes(*s).is_some()) && sound_encoding(r)
}

/// Whether `sig` is a valid signature over `message` by `key`, a key [`checked_key`] gave
/// (rules 1 and 2 for the signature's half, then 3).
pub(crate) fn verify_checked(key: &VerificationKey, message: &[u8], sig: &Signature) -> bool {
    sound_signature(sig) && equation_holds(key, message, sig)
}

/// Rule 3 alone, for a signature whose encodings passed rules 1 and 2.
fn equation_holds(key: &VerificationKey, message: &[u8], sig: &Signature) -> bool {
    key.verify(&ed25519_zebra::Signature::from_bytes(&sig.0), message)
        .is_ok()
}

/// Signature checks gathered to be made together.
///
/// A batch answers for each signature exactly as [`PublicKey::verify`] would, in about a
/// fifth of the time per signature when it holds dozens of signatures from a few keys (one
/// multi-scalar multiplication for all of them, each key's terms folded into one). Should
/// the combined check fail, each signature is checked on its own to find the bad ones, so
/// a batch with a bad signature costs about what checking them one by one costs.
///
/// The combination's coefficients are drawn from a hash of everything in the batch (keys,
/// signatures, messages): the core reads no random source, and a signer who cannot predict
/// the coefficients before fixing the signatures cannot make bad ones cancel out.
///
/// ```
/// use mesh_core::trust::{SecretKey, SignatureBatch};
/// let key = SecretKey::from_seed([7; 32]);
/// let mut batch = SignatureBatch::new();
/// batch.push(key.public(), b"one".to_vec(), key.sign(b"one"));
/// batch.push(key.public(), b"two".to_vec(), key.sign(b"one"));
/// assert_eq!(batch.check(), vec![true, false]);
/// ```
#[derive(Debug, Default)]
pub struct SignatureBatch {
    items: Vec<(PublicKey, Vec<u8>, Signature)>,
}

impl SignatureBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the check of `signature` by `key` over `message`.
    pub fn push(&mut self, key: PublicKey, message: Vec<u8>, signature: Signature) {
        self.items.push((key, message, signature));
    }

    /// How many checks the batch holds.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the batch holds no check.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The checks, in the order they were added.
    pub fn items(&self) -> impl Iterator<Item = (&PublicKey, &[u8], &Signature)> {
        self.items.iter().map(|(k, m, s)| (k, m.as_slice(), s))
    }

    /// Makes every check; the answers in the order the checks were added.
    pub fn check(&self) -> Vec<bool> {
        let mut answers = vec![false; self.items.len()];
        let mut queued = Vec::with_capacity(self.items.len());
        let mut verifier = batch::Verifier::new();
        let mut transcript = blake3::Hasher::new_derive_key("mesh 2026-12 batch coefficients v1");
        for (i, (key, message, sig)) in self.items.iter().enumerate() {
            let Some(checked) = checked_key(key).filter(|_| sound_signature(sig)) else {
                continue;
            };
            transcript.update(&key.0);
            transcript.update(&sig.0);
            transcript.update(&(message.len() as u64).to_be_bytes());
            transcript.update(message);
            verifier.queue((
                VerificationKeyBytes::from(key.0),
                ed25519_zebra::Signature::from_bytes(&sig.0),
                message.as_slice(),
            ));
            queued.push((i, checked));
        }
        let together = queued.len() > 1
            && verifier
                .verify(Coefficients(transcript.finalize_xof()))
                .is_ok();
        for (i, checked) in queued {
            answers[i] = together || {
                let (_, message, sig) = &self.items[i];
                equation_holds(&checked, message, sig)
            };
        }
        answers
    }
}

/// The batch's coefficients: BLAKE3's extendable output over the batch's contents.
struct Coefficients(blake3::OutputReader);

impl rand_core::RngCore for Coefficients {
    fn next_u32(&mut self) -> u32 {
        rand_core::impls::next_u32_via_fill(self)
    }

    fn next_u64(&mut self) -> u64 {
        rand_core::impls::next_u64_via_fill(self)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill(dest);
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.0.fill(dest);
        Ok(())
    }
}

impl rand_core::CryptoRng for Coefficients {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::SecretKey;
    use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
    use curve25519_dalek::edwards::EdwardsPoint;

    /// The 19 non-canonical `y` values (p to 2²⁵⁵ − 1), with either sign bit.
    fn non_canonical() -> Vec<[u8; 32]> {
        let mut out = Vec::new();
        for low in 0xedu8..=0xff {
            for sign in [0u8, 0x80] {
                let mut b = [0xffu8; 32];
                b[0] = low;
                b[31] = 0x7f | sign;
                out.push(b);
            }
        }
        out
    }

    #[test]
    fn non_canonical_and_small_order_points_are_not_sound() {
        for b in non_canonical() {
            assert!(!sound_point(&b), "{b:02x?}");
            // Where such bytes decode at all, the point re-encodes differently.
            if let Some(p) = CompressedEdwardsY(b).decompress() {
                assert_ne!(p.compress().0, b);
            }
        }
        for t in EIGHT_TORSION {
            assert!(!sound_point(&t.compress().0));
            // With the sign bit set: the negated point (small too), or, where x = 0 (orders 1
            // and 2), a non-canonical encoding.
            let mut b = t.compress().0;
            b[31] |= 0x80;
            assert!(!sound_point(&b));
        }
        // Without decoding, the encoding tells small order as decoding does.
        for n in 1..200u64 {
            let p = ED25519_BASEPOINT_POINT * scalar(n) + EIGHT_TORSION[(n % 8) as usize];
            for sign in [0, 0x80] {
                let mut b = p.compress().0;
                b[31] ^= sign;
                let decoded = CompressedEdwardsY(b).decompress().expect("a point");
                assert_eq!(sound_encoding(&b), !decoded.is_small_order(), "{n}");
            }
        }
        let p = ED25519_BASEPOINT_POINT * Scalar::from(12345u64);
        assert!(sound_point(&p.compress().0));
        // A point with a small-order part is not itself of small order: it is sound.
        let mixed: EdwardsPoint = p + EIGHT_TORSION[1];
        assert!(sound_point(&mixed.compress().0));
    }

    /// The keys a thread keeps decompressed change no answer: with more keys in turn than it
    /// keeps, every good signature verifies under its own key only, again and again.
    #[test]
    fn kept_keys_answer_as_fresh_ones() {
        let keys: Vec<SecretKey> = (0..(KEPT_KEYS as u8 + 3))
            .map(|i| SecretKey::from_seed([i + 1; 32]))
            .collect();
        for round in 0..3 {
            for (i, k) in keys.iter().enumerate() {
                let msg = format!("message {i} {round}");
                let sig = k.sign(msg.as_bytes());
                assert!(k.public().verify(msg.as_bytes(), &sig).is_ok());
                assert!(k.public().verify(b"another message", &sig).is_err());
                let other = &keys[(i + 1) % keys.len()];
                assert!(other.public().verify(msg.as_bytes(), &sig).is_err());
            }
        }
        // Bytes that are no sound point are refused every time, and never kept.
        let bad = (0..=255u8)
            .map(|b| [b; 32])
            .find(|bytes| !sound_point(bytes))
            .expect("some repeated byte is no point");
        let sig = keys[0].sign(b"m");
        for _ in 0..2 {
            assert!(PublicKey(bad).verify(b"m", &sig).is_err());
        }
        KEYS.with(|kept| {
            let kept = kept.borrow();
            assert!(kept.len() <= KEPT_KEYS);
            assert!(kept.iter().all(|(bytes, _)| *bytes != bad));
        });
    }

    /// The single check, as `PublicKey::verify` makes it.
    fn verify_one(key: &PublicKey, message: &[u8], sig: &Signature) -> bool {
        checked_key(key).is_some_and(|k| verify_checked(&k, message, sig))
    }

    /// ℓ, the order of the base point, little-endian.
    const ELL: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];

    /// A signature made by hand: `R` = [r]B + `extra`, `s` = r + k·a, so that
    /// [s]B − R − [k]A = −`extra` when `key` = [a]B (and whatever `key` is otherwise).
    fn raw_sign(a: Scalar, key: [u8; 32], r: Scalar, extra: EdwardsPoint, msg: &[u8]) -> Signature {
        use sha2::{Digest as _, Sha512};
        let big_r = (ED25519_BASEPOINT_POINT * r + extra).compress().0;
        let hash: [u8; 64] = Sha512::new()
            .chain_update(big_r)
            .chain_update(key)
            .chain_update(msg)
            .finalize()
            .into();
        let k = Scalar::from_bytes_mod_order_wide(&hash);
        let s = r + k * a;
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(&big_r);
        out[32..].copy_from_slice(&s.to_bytes());
        Signature(out)
    }

    /// `s` + ℓ: the same scalar, not canonically encoded.
    fn plus_ell(sig: &Signature) -> Signature {
        let mut out = *sig;
        let mut carry = 0u16;
        for (i, l) in ELL.iter().enumerate() {
            let sum = u16::from(sig.0[32 + i]) + u16::from(*l) + carry;
            out.0[32 + i] = sum as u8;
            carry = sum >> 8;
        }
        out
    }

    /// A nonce that is never zero.
    fn scalar(n: u64) -> Scalar {
        Scalar::from(n + 1) * Scalar::from(0x9e37_79b9_7f4a_7c15u64)
    }

    /// What each kind of signature is, and whether the rule takes it.
    #[derive(Clone, Copy, Debug)]
    enum Kind {
        /// Made by an RFC 8032 signer.
        Good,
        /// `R` carries a small-order part: only the cofactored equation holds.
        TorsionR,
        /// Over another message.
        OtherMessage,
        /// The cofactored equation holds, but `R` has small order.
        SmallR,
        /// The cofactored equation holds, but the key has small order.
        SmallKey,
        /// A good signature with `s` + ℓ in place of `s`.
        BigS,
        /// Arbitrary bytes.
        Noise,
    }

    impl Kind {
        const ALL: [Kind; 7] = [
            Kind::Good,
            Kind::TorsionR,
            Kind::OtherMessage,
            Kind::SmallR,
            Kind::SmallKey,
            Kind::BigS,
            Kind::Noise,
        ];

        fn valid(self) -> bool {
            matches!(self, Kind::Good | Kind::TorsionR)
        }

        /// A check of this kind by signer `who` (one of a few) over message number `n`.
        fn make(self, who: u8, n: u64) -> (PublicKey, Vec<u8>, Signature) {
            let secret = SecretKey::from_seed([who + 1; 32]);
            let key = secret.public();
            let msg = format!("message {n} by {who}").into_bytes();
            // The key's scalar, from its RFC 8032 expansion: SHA-512 of the seed, clamped.
            let a = {
                use sha2::{Digest as _, Sha512};
                let h: [u8; 64] = Sha512::digest(secret.to_seed()).into();
                let mut lo = [0u8; 32];
                lo.copy_from_slice(&h[..32]);
                lo[0] &= 248;
                lo[31] &= 127;
                lo[31] |= 64;
                Scalar::from_bytes_mod_order(lo)
            };
            let torsion = EIGHT_TORSION[1 + (n % 7) as usize];
            match self {
                Kind::Good => (key, msg.clone(), secret.sign(&msg)),
                Kind::TorsionR => (
                    key,
                    msg.clone(),
                    raw_sign(a, key.0, scalar(n), torsion, &msg),
                ),
                Kind::OtherMessage => (key, msg, secret.sign(b"another message")),
                Kind::SmallR => {
                    let sig = raw_sign(a, key.0, Scalar::ZERO, torsion, &msg);
                    (key, msg, sig)
                }
                Kind::SmallKey => {
                    let small = torsion.compress().0;
                    let sig = raw_sign(
                        Scalar::ZERO,
                        small,
                        scalar(n),
                        EdwardsPoint::default(),
                        &msg,
                    );
                    (PublicKey(small), msg, sig)
                }
                Kind::BigS => (key, msg.clone(), plus_ell(&secret.sign(&msg))),
                Kind::Noise => {
                    let mut sig = [0u8; 64];
                    for (i, b) in sig.iter_mut().enumerate() {
                        *b = (n as u8)
                            .wrapping_mul(31)
                            .wrapping_add((i as u8).wrapping_mul(7));
                    }
                    (key, msg, Signature(sig))
                }
            }
        }
    }

    /// Each kind is taken or refused as the rule says, on its own and in a batch, and the
    /// forms only the cofactored equation takes are exactly those this rule added to the
    /// cofactorless strict check (`ed25519-dalek`'s `verify_strict`) it replaces.
    #[test]
    fn each_kind_is_judged_by_the_rule_alone_and_in_a_batch() {
        for kind in Kind::ALL {
            for n in 0..8 {
                let (key, msg, sig) = kind.make(0, n);
                assert_eq!(verify_one(&key, &msg, &sig), kind.valid(), "{kind:?} {n}");
                let mut batch = SignatureBatch::new();
                let (gk, gm, gs) = Kind::Good.make(0, 100 + n);
                batch.push(gk, gm, gs);
                batch.push(key, msg.clone(), sig);
                assert_eq!(batch.check(), vec![true, kind.valid()], "{kind:?} {n}");
                let strict = ed25519_dalek::VerifyingKey::from_bytes(&key.0).is_ok_and(|k| {
                    k.verify_strict(&msg, &ed25519_dalek::Signature::from_bytes(&sig.0))
                        .is_ok()
                });
                assert_eq!(strict, matches!(kind, Kind::Good), "{kind:?} {n}");
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(64))]

        /// A batch answers for every check exactly as the check alone does, whatever the mix
        /// of kinds, signers and sizes.
        #[test]
        fn a_batch_answers_as_its_checks_alone(
            picks in proptest::collection::vec((0usize..7, 0u8..3), 0..40),
            weight in 0usize..4,
        ) {
            let mut batch = SignatureBatch::new();
            let mut expected = Vec::new();
            for (n, (kind, who)) in picks.iter().enumerate() {
                // Mostly good signatures, as in a real push, with `weight` tilting the mix.
                let kind = if n % 4 < weight { Kind::Good } else { Kind::ALL[*kind] };
                let (key, msg, sig) = kind.make(*who, n as u64);
                expected.push(kind.valid());
                proptest::prop_assert_eq!(verify_one(&key, &msg, &sig), kind.valid());
                batch.push(key, msg, sig);
            }
            proptest::prop_assert_eq!(batch.check(), expected);
        }
    }
}
