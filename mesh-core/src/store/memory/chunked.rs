//! A vector stored in fixed-size chunks, indexed by `u32`.
//!
//! A `Vec` that grows by doubling holds up to twice the memory its elements need (a third
//! more on average); these chunks are allocated at their full size one at a time, so at most
//! one chunk is partly empty. Elements never move once pushed, and growing copies nothing.

/// Elements per chunk.
const CHUNK: usize = 1024;

/// A `u32`-indexed vector stored in chunks of [`CHUNK`] elements.
pub(super) struct Chunked<T> {
    chunks: Vec<Vec<T>>,
    len: u32,
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Chunked {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Chunked<T> {
    /// The most elements a `Chunked` holds (`u32::MAX` is left free as a marker for users).
    pub(super) const MAX: u32 = u32::MAX - 1;

    /// The number of elements.
    pub(super) fn len(&self) -> u32 {
        self.len
    }

    /// Appends `value` and returns its index, or gives it back when [`Self::MAX`] elements
    /// are held already.
    pub(super) fn push(&mut self, value: T) -> Result<u32, T> {
        if self.len >= Self::MAX {
            return Err(value);
        }
        let at = self.len;
        match self.chunks.last_mut() {
            Some(c) if c.len() < CHUNK => c.push(value),
            _ => {
                let mut c = Vec::with_capacity(CHUNK);
                c.push(value);
                self.chunks.push(c);
            }
        }
        self.len += 1;
        Ok(at)
    }

    /// Removes and returns the last element.
    pub(super) fn pop(&mut self) -> Option<T> {
        let last = self.chunks.last_mut()?;
        let value = last.pop();
        if last.is_empty() {
            self.chunks.pop();
        }
        if value.is_some() {
            self.len -= 1;
        }
        value
    }

    /// The element at `i`.
    #[inline]
    pub(super) fn get(&self, i: u32) -> Option<&T> {
        let i = i as usize;
        self.chunks.get(i / CHUNK)?.get(i % CHUNK)
    }

    /// The element at `i`, mutably.
    #[inline]
    pub(super) fn get_mut(&mut self, i: u32) -> Option<&mut T> {
        let i = i as usize;
        self.chunks.get_mut(i / CHUNK)?.get_mut(i % CHUNK)
    }

    /// The last element.
    pub(super) fn last(&self) -> Option<&T> {
        self.chunks.last()?.last()
    }

    /// The elements from index `from` on, in order.
    pub(super) fn iter_from(&self, from: u32) -> impl Iterator<Item = &T> + '_ {
        let from = from as usize;
        let (c, o) = (from / CHUNK, from % CHUNK);
        self.chunks
            .get(c..)
            .unwrap_or_default()
            .iter()
            .enumerate()
            .flat_map(move |(k, chunk)| chunk.get(if k == 0 { o } else { 0 }..).unwrap_or_default())
    }

    /// All elements, in order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.chunks.iter().flatten()
    }

    /// The first index whose element does not satisfy `pred`, given that the elements that
    /// satisfy it all come first (as [`slice::partition_point`]).
    pub(super) fn partition_point(&self, mut pred: impl FnMut(&T) -> bool) -> u32 {
        let c = self
            .chunks
            .partition_point(|chunk| chunk.last().is_some_and(&mut pred));
        match self.chunks.get(c) {
            Some(chunk) => (c * CHUNK + chunk.partition_point(pred)) as u32,
            None => self.len,
        }
    }

    /// Keeps only the elements for which `keep` holds, in order.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        let mut out = Chunked::default();
        for chunk in std::mem::take(&mut self.chunks) {
            for value in chunk {
                if keep(&value) {
                    // Never full: `out` holds fewer elements than `self` did.
                    let _ = out.push(value);
                }
            }
        }
        *self = out;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Push(u16),
        Pop,
        Retain(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => any::<u16>().prop_map(Op::Push),
            2 => Just(Op::Pop),
            1 => (1u16..8).prop_map(Op::Retain),
        ]
    }

    proptest! {
        /// Every operation leaves the same elements as a `Vec` given the same operations.
        #[test]
        fn behaves_like_a_vec(ops in proptest::collection::vec(op(), 0..3000), probe in any::<u16>()) {
            let mut c = Chunked::default();
            let mut v: Vec<u16> = Vec::new();
            for op in ops {
                match op {
                    Op::Push(x) => {
                        prop_assert_eq!(c.push(x), Ok(v.len() as u32));
                        v.push(x);
                    }
                    Op::Pop => prop_assert_eq!(c.pop(), v.pop()),
                    Op::Retain(m) => {
                        c.retain(|x| x % m != 0);
                        v.retain(|x| x % m != 0);
                    }
                }
                prop_assert_eq!(c.len() as usize, v.len());
            }
            prop_assert_eq!(c.iter().copied().collect::<Vec<_>>(), v.clone());
            prop_assert_eq!(c.last(), v.last());
            for i in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, v.len().saturating_sub(1), v.len()] {
                prop_assert_eq!(c.get(i as u32), v.get(i));
                let tail: Vec<u16> = c.iter_from(i as u32).copied().collect();
                prop_assert_eq!(tail, v.get(i..).unwrap_or_default().to_vec());
            }
            let mut sorted = v.clone();
            sorted.sort_unstable();
            let mut s = Chunked::default();
            for x in &sorted {
                let _ = s.push(*x);
            }
            prop_assert_eq!(
                s.partition_point(|x| *x < probe) as usize,
                sorted.partition_point(|x| *x < probe)
            );
        }
    }

    #[test]
    fn get_mut_changes_the_element() {
        let mut c = Chunked::default();
        for i in 0..(2 * CHUNK as u32 + 5) {
            assert_eq!(c.push(i), Ok(i));
        }
        *c.get_mut(CHUNK as u32 + 3).unwrap() = 7;
        assert_eq!(c.get(CHUNK as u32 + 3), Some(&7));
        assert_eq!(c.get(2 * CHUNK as u32 + 5), None);
    }
}
