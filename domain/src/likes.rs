//! Who likes a post, kept compact: a 128-bit fingerprint per user instead of
//! the user id, most of them in one sorted array. A post with a million likes
//! holds 16 MB here, not the hundred-odd a set of strings would take, and its
//! snapshot is that array as it is (see [`crate::post::Post::to_snapshot`]).
//!
//! Fingerprints are the first 128 bits of SHA-256 over the user id's bytes.
//! Two users could share one only by a collision no one can aim: finding an id
//! whose fingerprint is a given user's (so that a like of theirs is a no-op and
//! their unlike removes the other's) is a second preimage, 2^128 work; two ids
//! of an attacker's own that collide (2^64 work) harm only those two. By
//! chance, a million users share one with odds of about 10^-27. The function
//! never changes without [`crate::post::SNAPSHOT_SCHEMA`] changing too, since
//! snapshots store its values.

use std::collections::HashSet;

use sha2::{Digest, Sha256};

use crate::values::UserId;

/// The first 128 bits of SHA-256 of the user id's bytes.
pub fn fingerprint(user: &UserId) -> u128 {
    let digest = Sha256::digest(user.as_str().as_bytes());
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(first)
}

/// A set of fingerprints: a sorted array plus what changed since it was last
/// merged. Lookups are a binary search and two hash probes; changes go to the
/// small sets and are merged into the array once they reach a quarter of it,
/// so each change costs O(1) amortized.
#[derive(Debug, Clone, Default)]
pub struct LikeSet {
    /// Sorted, no duplicates.
    base: Vec<u128>,
    /// In the set but not in `base`.
    added: HashSet<u128>,
    /// In `base` but no longer in the set.
    removed: HashSet<u128>,
}

/// Changes kept beside the array before it is merged again, at the least.
const MIN_PENDING: usize = 4_096;

impl LikeSet {
    pub fn contains(&self, user: &UserId) -> bool {
        self.contains_fingerprint(fingerprint(user))
    }

    fn in_base(&self, f: u128) -> bool {
        self.base.binary_search(&f).is_ok()
    }

    fn contains_fingerprint(&self, f: u128) -> bool {
        self.added.contains(&f) || (self.in_base(f) && !self.removed.contains(&f))
    }

    /// Adds the user; false if they were in already.
    pub fn insert(&mut self, user: &UserId) -> bool {
        let f = fingerprint(user);
        if self.contains_fingerprint(f) {
            return false;
        }
        if !self.removed.remove(&f) {
            self.added.insert(f);
        }
        self.merge_if_due();
        true
    }

    /// Removes the user; false if they were not in.
    pub fn remove(&mut self, user: &UserId) -> bool {
        let f = fingerprint(user);
        let removed = self.added.remove(&f) || (self.in_base(f) && self.removed.insert(f));
        self.merge_if_due();
        removed
    }

    pub fn len(&self) -> usize {
        self.base.len() - self.removed.len() + self.added.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn merge_if_due(&mut self) {
        if self.added.len() + self.removed.len() > MIN_PENDING.max(self.base.len() / 4) {
            self.base = self.sorted();
            self.added.clear();
            self.removed.clear();
        }
    }

    /// Every fingerprint, sorted.
    pub fn sorted(&self) -> Vec<u128> {
        let mut added: Vec<u128> = self.added.iter().copied().collect();
        added.sort_unstable();
        let mut merged = Vec::with_capacity(self.len());
        let mut kept = self
            .base
            .iter()
            .filter(|f| !self.removed.contains(f))
            .peekable();
        let mut new = added.into_iter().peekable();
        loop {
            let next = match (kept.peek(), new.peek()) {
                (Some(a), Some(b)) if **a < *b => kept.next().copied(),
                (Some(_), Some(_)) | (None, Some(_)) => new.next(),
                (Some(_), None) => kept.next().copied(),
                (None, None) => break,
            };
            merged.extend(next);
        }
        merged
    }

    /// A set of the given fingerprints, which must be sorted without
    /// duplicates (as [`Self::sorted`] gives them); `None` otherwise.
    pub fn from_sorted(base: Vec<u128>) -> Option<Self> {
        base.windows(2).all(|w| w[0] < w[1]).then(|| Self {
            base,
            added: HashSet::new(),
            removed: HashSet::new(),
        })
    }
}

impl PartialEq for LikeSet {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.sorted() == other.sorted()
    }
}

impl Eq for LikeSet {}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::{LikeSet, MIN_PENDING};
    use crate::values::UserId;

    fn user(i: usize) -> UserId {
        UserId::parse(&format!("user{i}")).expect("valid")
    }

    /// Fingerprints are SHA-256's first 128 bits (a function whose collisions
    /// cannot be aimed at a given user, unlike FNV-1a's), big-endian.
    #[test]
    fn fingerprints_are_the_first_half_of_sha256() {
        let alice = UserId::parse("alice").expect("valid");
        // SHA-256("alice") = 2bd806c97f0e00af1a1fc3328fa763a9269723c8db8fac4f93af71db186d6e90
        assert_eq!(
            super::fingerprint(&alice),
            0x2bd8_06c9_7f0e_00af_1a1f_c332_8fa7_63a9
        );
    }

    /// The set behaves as a set of user ids through merges, in any mix of
    /// inserts and removes.
    #[test]
    fn behaves_as_a_set_across_merges() {
        let mut set = LikeSet::default();
        let mut model = BTreeSet::new();
        for step in 0..(MIN_PENDING * 5) {
            let i = (step * 7_919) % (MIN_PENDING * 2);
            let u = user(i);
            if step % 3 == 2 {
                assert_eq!(set.remove(&u), model.remove(&i), "remove {i} at {step}");
            } else {
                assert_eq!(set.insert(&u), model.insert(i), "insert {i} at {step}");
            }
            assert_eq!(set.len(), model.len());
        }
        for i in 0..MIN_PENDING * 2 {
            assert_eq!(set.contains(&user(i)), model.contains(&i));
        }
        let rebuilt = LikeSet::from_sorted(set.sorted()).expect("sorted");
        assert_eq!(rebuilt, set);
        assert!(LikeSet::from_sorted(vec![2, 1]).is_none());
        assert!(LikeSet::from_sorted(vec![1, 1]).is_none());
    }
}
