//! Reused, page-aligned buffers for segment objects.
//!
//! Every flush builds a segment of up to a few MiB. Allocated fresh each time, its memory comes
//! straight from the kernel: one page fault and one page clear per 4 KiB, which on the 2-core
//! test machine was a quarter of the server's CPU in a produce-and-consume run. A segment's
//! buffer lives on after the upload (the fetch tier's block cache serves tail reads from it),
//! so it cannot simply be reused by the next flush; instead the buffer goes back to this pool
//! when the last `Bytes` referring to it is dropped ([`Bytes::from_owner`]).
//!
//! The usable part of each buffer starts on a [`BUFFER_ALIGN`] boundary, so the local object
//! store can write it with direct I/O without copying it to an aligned staging buffer.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Alignment of the start of every buffer handed out (direct I/O's strictest block size).
pub const BUFFER_ALIGN: usize = 4096;

/// New buffers are rounded up to a multiple of this, so buffers of slightly different sizes
/// can be reused for each other.
const SIZE_STEP: usize = 1024 * 1024;

/// Idle buffers kept for reuse.
pub struct BufferPool {
    idle: Mutex<Vec<Vec<u8>>>,
    max_idle: usize,
}

impl std::fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferPool")
            .field("max_idle", &self.max_idle)
            .finish()
    }
}

/// A pooled buffer lent out as `Bytes`; returns to its pool when dropped.
struct Lent {
    buffer: Vec<u8>,
    start: usize,
    len: usize,
    pool: Arc<BufferPool>,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        &self.buffer[self.start..self.start + self.len]
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buffer));
    }
}

impl BufferPool {
    /// A pool keeping up to `max_idle` idle buffers.
    pub fn new(max_idle: usize) -> Arc<Self> {
        Arc::new(BufferPool {
            idle: Mutex::new(Vec::new()),
            max_idle,
        })
    }

    /// `len` bytes written by `fill` (which gets exactly `len` bytes to fill, starting on a
    /// [`BUFFER_ALIGN`] boundary), as `Bytes` whose memory returns to the pool once dropped.
    pub fn build(self: &Arc<Self>, len: usize, fill: impl FnOnce(&mut [u8])) -> Bytes {
        let need = len + BUFFER_ALIGN;
        let mut buffer = self.take(need).unwrap_or_else(|| {
            // Zeroed once, when the pool grows; reused buffers are overwritten by `fill`.
            vec![0u8; need.next_multiple_of(SIZE_STEP)]
        });
        let start = buffer.as_ptr().align_offset(BUFFER_ALIGN);
        fill(&mut buffer[start..start + len]);
        Bytes::from_owner(Lent {
            buffer,
            start,
            len,
            pool: self.clone(),
        })
    }

    /// Buffers currently idle in the pool.
    pub fn idle(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(&self, need: usize) -> Option<Vec<u8>> {
        let mut idle = self.lock();
        let fit = idle.iter().position(|b| b.len() >= need)?;
        Some(idle.swap_remove(fit))
    }

    fn give_back(&self, buffer: Vec<u8>) {
        let mut idle = self.lock();
        if idle.len() < self.max_idle {
            idle.push(buffer);
        } else if let Some(smallest) = idle.iter_mut().min_by_key(|b| b.len())
            && smallest.len() < buffer.len()
        {
            // Keep the larger one: it can serve any request the smaller one could.
            *smallest = buffer;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_filled_and_reused_once_dropped() {
        let pool = BufferPool::new(2);
        let a = pool.build(10_000, |b| b.fill(7));
        assert_eq!(a.len(), 10_000);
        assert!(a.iter().all(|&x| x == 7));
        assert_eq!(a.as_ptr() as usize % BUFFER_ALIGN, 0);
        let slice = a.slice(100..200);
        let first = a.as_ptr();
        drop(a);
        assert_eq!(pool.idle(), 0, "a slice still holds the buffer");
        drop(slice);
        assert_eq!(pool.idle(), 1);
        let b = pool.build(20_000, |b| b.fill(9));
        assert_eq!(b.as_ptr(), first, "the idle buffer was reused");
        assert!(b.iter().all(|&x| x == 9));
        assert_eq!(pool.idle(), 0);
    }

    #[test]
    fn at_most_max_idle_buffers_are_kept() {
        let pool = BufferPool::new(1);
        let a = pool.build(10, |_| {});
        let b = pool.build(3 * SIZE_STEP, |_| {});
        drop(a);
        drop(b);
        assert_eq!(pool.idle(), 1);
        // The larger buffer was kept: a large request is served without allocating.
        let big = pool.build(2 * SIZE_STEP, |_| {});
        assert_eq!(pool.idle(), 0);
        drop(big);
    }
}
