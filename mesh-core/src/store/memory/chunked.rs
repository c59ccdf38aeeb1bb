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

    /// All elements, in order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.chunks.iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Pushes and pops leave the same elements as a `Vec` given the same operations.
        #[test]
        fn behaves_like_a_vec(ops in proptest::collection::vec(proptest::option::of(any::<u16>()), 0..5000)) {
            let mut c = Chunked::default();
            let mut v: Vec<u16> = Vec::new();
            for op in ops {
                match op {
                    Some(x) => {
                        prop_assert_eq!(c.push(x), Ok(v.len() as u32));
                        v.push(x);
                    }
                    None => prop_assert_eq!(c.pop(), v.pop()),
                }
                prop_assert_eq!(c.len() as usize, v.len());
            }
            prop_assert_eq!(c.iter().copied().collect::<Vec<_>>(), v.clone());
            for i in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, v.len().saturating_sub(1), v.len()] {
                prop_assert_eq!(c.get(i as u32), v.get(i));
            }
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
