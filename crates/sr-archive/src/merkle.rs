//! RFC 6962 Merkle trees: hashes, tree heads, inclusion and consistency proofs, and their
//! verification. Pure code: the nodes come from a [`NodeSource`] (memory or the archive db).
//!
//! * leaf hash `H(0x00 || d)`, node hash `H(0x01 || left || right)`, `H` = SHA-256;
//! * `MTH` of an empty tree is `H()` (the hash of the empty string);
//! * proofs are `PATH(m, D[n])` and `PROOF(m, D[n])` exactly as RFC 6962 section 2.1.1/2.1.2
//!   define them (the audit path is listed from the leaf to the root);
//! * verification follows the algorithms of RFC 9162 sections 2.1.3.2 and 2.1.4.2.
//!
//! Storage model: a node `(level, index)` is the root of the *complete* subtree over leaves
//! `[index << level, (index + 1) << level)`. Only complete subtrees are stored; the hash of any
//! other range (the right edge of a tree whose size is not a power of two) is computed from
//! at most `log2(n)` stored nodes. Appending a leaf stores the leaf and the complete subtrees it
//! closes ([`append_nodes`]): `O(log n)` work per leaf, never a rebuild.

use sha2::{Digest, Sha256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// Where the stored complete subtrees come from.
pub trait NodeSource {
    /// The error of a lookup.
    type Error;
    /// The root of the complete subtree `(level, index)`; it must exist.
    fn node(&self, level: u32, index: u64) -> Result<Hash, Self::Error>;
}

/// `H(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// `H(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// `MTH({})`: the hash of the empty string.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The largest power of two strictly smaller than `n` (`n >= 2`).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The nodes to store when the leaf with hash `leaf` becomes leaf number `size` (the tree had
/// `size` leaves before): the leaf itself at level 0, then every complete subtree it closes.
pub fn append_nodes<S: NodeSource>(
    src: &S,
    size: u64,
    leaf: Hash,
) -> Result<Vec<(u32, u64, Hash)>, S::Error> {
    let mut out = vec![(0, size, leaf)];
    let (mut level, mut index, mut cur) = (0u32, size, leaf);
    while index & 1 == 1 {
        let left = src.node(level, index - 1)?;
        cur = node_hash(&left, &cur);
        level += 1;
        index >>= 1;
        out.push((level, index, cur));
    }
    Ok(out)
}

/// `MTH(D[lo:hi])`. `lo` is a multiple of the largest power of two not above `hi - lo`, which
/// holds for every range the RFC 6962 recursions visit.
pub fn range_hash<S: NodeSource>(src: &S, lo: u64, hi: u64) -> Result<Hash, S::Error> {
    let size = hi - lo;
    if size == 0 {
        return Ok(empty_root());
    }
    if size.is_power_of_two() && lo % size == 0 {
        let level = size.trailing_zeros();
        return src.node(level, lo >> level);
    }
    let k = split(size);
    let left = range_hash(src, lo, lo + k)?;
    let right = range_hash(src, lo + k, hi)?;
    Ok(node_hash(&left, &right))
}

/// `MTH(D[0:n])`.
pub fn root<S: NodeSource>(src: &S, n: u64) -> Result<Hash, S::Error> {
    range_hash(src, 0, n)
}

/// `PATH(m, D[n])`, leaf to root. `m < n` is the caller's to check.
pub fn inclusion_path<S: NodeSource>(src: &S, m: u64, n: u64) -> Result<Vec<Hash>, S::Error> {
    let mut path = Vec::new();
    path_rec(src, m, 0, n, &mut path)?;
    Ok(path)
}

fn path_rec<S: NodeSource>(
    src: &S,
    m: u64,
    lo: u64,
    hi: u64,
    out: &mut Vec<Hash>,
) -> Result<(), S::Error> {
    let n = hi - lo;
    if n <= 1 {
        return Ok(());
    }
    let k = split(n);
    if m < k {
        path_rec(src, m, lo, lo + k, out)?;
        out.push(range_hash(src, lo + k, hi)?);
    } else {
        path_rec(src, m - k, lo + k, hi, out)?;
        out.push(range_hash(src, lo, lo + k)?);
    }
    Ok(())
}

/// `PROOF(m, D[n])` for `0 < m <= n` (empty when `m == n`). Other sizes are the caller's to
/// refuse.
pub fn consistency_proof<S: NodeSource>(src: &S, m: u64, n: u64) -> Result<Vec<Hash>, S::Error> {
    let mut proof = Vec::new();
    if m > 0 && m < n {
        subproof(src, m, 0, n, true, &mut proof)?;
    }
    Ok(proof)
}

fn subproof<S: NodeSource>(
    src: &S,
    m: u64,
    lo: u64,
    hi: u64,
    complete: bool,
    out: &mut Vec<Hash>,
) -> Result<(), S::Error> {
    let n = hi - lo;
    if m == n {
        if !complete {
            out.push(range_hash(src, lo, hi)?);
        }
        return Ok(());
    }
    let k = split(n);
    if m <= k {
        subproof(src, m, lo, lo + k, complete, out)?;
        out.push(range_hash(src, lo + k, hi)?);
    } else {
        subproof(src, m - k, lo + k, hi, false, out)?;
        out.push(range_hash(src, lo, lo + k)?);
    }
    Ok(())
}

/// Why a proof does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The leaf index is not below the tree size.
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange {
        /// The leaf index.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// The path is longer or shorter than a tree of this size needs.
    #[error("the proof has the wrong length for these tree sizes")]
    WrongLength,
    /// The path leads to another root.
    #[error("the proof leads to root {computed}, not to {expected}")]
    RootMismatch {
        /// The root the proof computes (hex).
        computed: String,
        /// The root that was expected (hex).
        expected: String,
    },
    /// The old tree is not a prefix of the new one.
    #[error("the old root {which} does not follow from the proof: {computed} != {expected}")]
    Inconsistent {
        /// `old` or `new`.
        which: &'static str,
        /// What the proof computes (hex).
        computed: String,
        /// What the checkpoint says (hex).
        expected: String,
    },
    /// The new tree is smaller than the old one.
    #[error("the new tree size {new} is smaller than the old one {old}: the log shrank")]
    Shrunk {
        /// Old size.
        old: u64,
        /// New size.
        new: u64,
    },
    /// Same size, different roots: the log was rewritten.
    #[error("both trees have {size} leaves but different roots: the log was rewritten")]
    Forked {
        /// The size.
        size: u64,
    },
}

/// RFC 9162 section 2.1.3.2: verifies that `leaf` is leaf `index` of the tree of `size` leaves
/// with root `root`.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    path: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in path {
        if sn == 0 {
            return Err(ProofError::WrongLength);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::WrongLength);
    }
    if &r != root {
        return Err(ProofError::RootMismatch {
            computed: hex::encode(r),
            expected: hex::encode(root),
        });
    }
    Ok(())
}

/// RFC 9162 section 2.1.4.2: verifies that the tree of `old_size` leaves with root `old_root`
/// is a prefix of the tree of `new_size` leaves with root `new_root`.
///
/// Edge cases the RFC leaves to the caller, decided as transparency logs usually do: an empty
/// old tree is a prefix of every tree (the proof must be empty); equal sizes need an empty proof
/// and equal roots; a smaller new tree fails.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if new_size < old_size {
        return Err(ProofError::Shrunk {
            old: old_size,
            new: new_size,
        });
    }
    if old_size == new_size {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        if old_root != new_root {
            return Err(ProofError::Forked { size: old_size });
        }
        return Ok(());
    }
    if old_size == 0 {
        return if proof.is_empty() {
            Ok(())
        } else {
            Err(ProofError::WrongLength)
        };
    }
    // 1. An empty proof cannot connect two different sizes.
    if proof.is_empty() {
        return Err(ProofError::WrongLength);
    }
    // 2. A power-of-two old tree is itself a node of the new tree: its root starts the path.
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    // 3.-4.
    let (mut fn_, mut sn) = (old_size - 1, new_size - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    // 5.
    let (mut fr, mut sr) = (path[0], path[0]);
    // 6.
    for c in &path[1..] {
        if sn == 0 {
            return Err(ProofError::WrongLength);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    // 7.
    if sn != 0 {
        return Err(ProofError::WrongLength);
    }
    if &fr != old_root {
        return Err(ProofError::Inconsistent {
            which: "old",
            computed: hex::encode(fr),
            expected: hex::encode(old_root),
        });
    }
    if &sr != new_root {
        return Err(ProofError::Inconsistent {
            which: "new",
            computed: hex::encode(sr),
            expected: hex::encode(new_root),
        });
    }
    Ok(())
}

/// A tree in memory (tests, benches, and reference for the db-backed one).
#[derive(Debug, Clone, Default)]
pub struct MemoryTree {
    levels: Vec<Vec<Hash>>,
}

impl MemoryTree {
    /// An empty tree.
    pub fn new() -> MemoryTree {
        MemoryTree::default()
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// Appends the leaf for entry `data`; returns its index.
    pub fn push_entry(&mut self, data: &[u8]) -> u64 {
        self.push_leaf_hash(leaf_hash(data))
    }

    /// Appends a leaf hash; returns its index.
    pub fn push_leaf_hash(&mut self, leaf: Hash) -> u64 {
        let size = self.size();
        let Ok(nodes) = append_nodes(self, size, leaf);
        for (level, index, hash) in nodes {
            let level = level as usize;
            if self.levels.len() <= level {
                self.levels.push(Vec::new());
            }
            debug_assert_eq!(self.levels[level].len() as u64, index);
            self.levels[level].push(hash);
        }
        size
    }
}

impl NodeSource for MemoryTree {
    type Error = std::convert::Infallible;
    fn node(&self, level: u32, index: u64) -> Result<Hash, Self::Error> {
        // Only reachable with a (level, index) the tree has: the recursions ask for complete
        // subtrees below the size they were given.
        Ok(self.levels[level as usize][index as usize])
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// MTH straight from the RFC's definition, over leaf hashes.
    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split(n as u64) as usize;
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    fn tree(n: u64) -> (MemoryTree, Vec<Hash>) {
        let mut t = MemoryTree::new();
        let mut leaves = Vec::new();
        for i in 0..n {
            t.push_entry(&i.to_be_bytes());
            leaves.push(leaf_hash(&i.to_be_bytes()));
        }
        (t, leaves)
    }

    #[test]
    fn roots_match_the_recursive_definition() {
        for n in 0..70u64 {
            let (t, leaves) = tree(n);
            assert_eq!(root(&t, n).unwrap(), mth(&leaves), "n={n}");
        }
    }

    #[test]
    fn every_inclusion_proof_verifies_and_a_flipped_one_does_not() {
        for n in 1..40u64 {
            let (t, leaves) = tree(n);
            let r = root(&t, n).unwrap();
            for m in 0..n {
                let path = inclusion_path(&t, m, n).unwrap();
                verify_inclusion(m, n, &leaves[m as usize], &path, &r).unwrap();
                assert!(verify_inclusion(m, m, &leaves[m as usize], &path, &r).is_err());
                if let Some(first) = path.first() {
                    let mut bad = path.clone();
                    bad[0][0] ^= 1;
                    assert!(verify_inclusion(m, n, &leaves[m as usize], &bad, &r).is_err());
                    assert_ne!(first, &bad[0]);
                }
                let other = (m + 1) % n;
                if other != m {
                    assert!(verify_inclusion(other, n, &leaves[m as usize], &path, &r).is_err());
                }
            }
        }
    }

    #[test]
    fn every_consistency_proof_verifies_and_a_forged_root_does_not() {
        for n in 1..34u64 {
            let (t, _) = tree(n);
            let new_root = root(&t, n).unwrap();
            for m in 0..=n {
                let old_root = root(&t, m).unwrap();
                let proof = consistency_proof(&t, m, n).unwrap();
                verify_consistency(m, n, &old_root, &new_root, &proof).unwrap();
                if m > 0 && m < n {
                    let mut forged = old_root;
                    forged[5] ^= 0x40;
                    assert!(verify_consistency(m, n, &forged, &new_root, &proof).is_err());
                    assert!(verify_consistency(m, n, &old_root, &forged, &proof).is_err());
                    assert!(verify_consistency(m, n, &old_root, &new_root, &proof[1..]).is_err());
                }
            }
            assert!(matches!(
                verify_consistency(n, n - 1, &new_root, &new_root, &[]),
                Err(ProofError::Shrunk { .. })
            ));
        }
    }

    #[test]
    fn a_rewritten_history_is_not_consistent() {
        let (t, _) = tree(10);
        let mut other = MemoryTree::new();
        for i in 0..20u64 {
            // Leaf 3 differs: same sizes, another history.
            let v = if i == 3 { 999u64 } else { i };
            other.push_entry(&v.to_be_bytes());
        }
        let proof = consistency_proof(&other, 10, 20).unwrap();
        let err = verify_consistency(
            10,
            20,
            &root(&t, 10).unwrap(),
            &root(&other, 20).unwrap(),
            &proof,
        )
        .unwrap_err();
        assert!(matches!(err, ProofError::Inconsistent { .. }), "{err}");
    }
}
