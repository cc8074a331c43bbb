//! A byte-bounded LRU of immutable values (`Bytes`, or anything that says how many bytes it
//! holds) whose misses load at most once.
//!
//! Both read caches of the fetch tier (whole object blocks, and patched index-entry ranges) need
//! the same three things: a bound in bytes rather than entries, eviction of the least recently
//! used, and *single flight*: when many consumers miss the same key at once (every tail reader
//! of a fresh segment does), one load runs and everyone awaits it. A load that fails is not
//! cached; the next miss tries again.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use lru::LruCache;
use metrics::{Counter, Gauge};

use crate::metrics as names;

/// Hit, miss and size metrics of a named cache (no-op handles for an unnamed one).
struct CacheMetrics {
    hits: Counter,
    misses: Counter,
    bytes: Gauge,
}

/// A cached value: cheap to clone (it shares its bytes), and the bytes it keeps in memory.
pub trait CacheValue: Clone {
    /// Bytes counted against the cache's capacity.
    fn cached_len(&self) -> usize;
}

impl CacheValue for Bytes {
    fn cached_len(&self) -> usize {
        self.len()
    }
}

type Load<V, E> = Shared<BoxFuture<'static, Result<V, E>>>;

struct Inner<K: Hash + Eq, E, V> {
    lru: LruCache<K, V>,
    bytes: usize,
    loading: HashMap<K, Load<V, E>>,
}

/// Cached values by key, at most `capacity` bytes of them.
pub struct LoadingCache<K: Hash + Eq, E, V = Bytes> {
    capacity: usize,
    inner: Mutex<Inner<K, E, V>>,
    metrics: CacheMetrics,
}

impl<K, E, V> LoadingCache<K, E, V>
where
    K: Hash + Eq + Clone,
    E: Clone,
    V: CacheValue,
{
    /// An empty cache holding at most `capacity` bytes (0 caches nothing but still shares
    /// concurrent loads).
    pub fn new(capacity: usize) -> Self {
        LoadingCache {
            capacity,
            inner: Mutex::new(Inner {
                lru: LruCache::unbounded(),
                bytes: 0,
                loading: HashMap::new(),
            }),
            metrics: CacheMetrics {
                hits: Counter::noop(),
                misses: Counter::noop(),
                bytes: Gauge::noop(),
            },
        }
    }

    /// Exports the cache's hits, misses and bytes under `cache="name"`.
    pub fn named(mut self, name: &'static str) -> Self {
        self.metrics = CacheMetrics {
            hits: ::metrics::counter!(names::CACHE_HITS, "cache" => name),
            misses: ::metrics::counter!(names::CACHE_MISSES, "cache" => name),
            bytes: ::metrics::gauge!(names::CACHE_BYTES, "cache" => name),
        };
        self
    }

    fn lock(&self) -> MutexGuard<'_, Inner<K, E, V>> {
        // Every critical section leaves the maps consistent, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached value of `key`, if any (and marks it recently used).
    pub fn get(&self, key: &K) -> Option<V> {
        let found = self.lock().lru.get(key).cloned();
        match found {
            Some(_) => self.metrics.hits.increment(1),
            None => self.metrics.misses.increment(1),
        }
        found
    }

    /// The value of `key`: cached, or being loaded by someone else (then awaits that load), or
    /// loaded now by `load` and cached.
    pub async fn get_or_load(
        &self,
        key: K,
        load: impl FnOnce() -> BoxFuture<'static, Result<V, E>>,
    ) -> Result<V, E> {
        let pending = {
            let mut inner = self.lock();
            if let Some(b) = inner.lru.get(&key) {
                self.metrics.hits.increment(1);
                return Ok(b.clone());
            }
            self.metrics.misses.increment(1);
            match inner.loading.get(&key) {
                Some(l) => l.clone(),
                None => {
                    let shared = load().shared();
                    inner.loading.insert(key.clone(), shared.clone());
                    shared
                }
            }
        };
        let result = pending.await;
        let mut inner = self.lock();
        inner.loading.remove(&key);
        if let Ok(value) = &result {
            Self::insert_locked(&mut inner, self.capacity, key, value.clone());
            self.metrics.bytes.set(inner.bytes as f64);
        }
        result
    }

    /// Caches `value` under `key` (replacing nothing: values of a key never change).
    pub fn insert(&self, key: K, value: V) {
        let mut inner = self.lock();
        Self::insert_locked(&mut inner, self.capacity, key, value);
        self.metrics.bytes.set(inner.bytes as f64);
    }

    fn insert_locked(inner: &mut Inner<K, E, V>, capacity: usize, key: K, value: V) {
        let len = value.cached_len();
        if len > capacity || inner.lru.peek(&key).is_some() {
            return;
        }
        inner.bytes += len;
        inner.lru.put(key, value);
        while inner.bytes > capacity {
            match inner.lru.pop_lru() {
                Some((_, old)) => inner.bytes -= old.cached_len(),
                None => break,
            }
        }
    }

    /// Bytes currently cached.
    pub fn cached_bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn loader(
        calls: &Arc<AtomicUsize>,
        value: &'static [u8],
    ) -> impl FnOnce() -> BoxFuture<'static, Result<Bytes, String>> {
        let calls = calls.clone();
        move || {
            Box::pin(async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
                Ok(Bytes::from_static(value))
            })
        }
    }

    #[tokio::test]
    async fn concurrent_misses_load_once_and_hits_do_not_load() {
        let cache = LoadingCache::<u32, String>::new(100);
        let calls = Arc::new(AtomicUsize::new(0));
        let (a, b) = tokio::join!(
            cache.get_or_load(1, loader(&calls, b"one")),
            cache.get_or_load(1, loader(&calls, b"one")),
        );
        assert_eq!(
            (a.unwrap(), b.unwrap()),
            (Bytes::from("one"), Bytes::from("one"))
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        cache.get_or_load(1, loader(&calls, b"one")).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn least_recently_used_is_evicted_to_stay_within_capacity() {
        let cache = LoadingCache::<u32, String>::new(10);
        cache.insert(1, Bytes::from_static(b"aaaa"));
        cache.insert(2, Bytes::from_static(b"bbbb"));
        assert!(cache.get(&1).is_some()); // 2 is now the least recently used
        cache.insert(3, Bytes::from_static(b"cccc"));
        assert!(cache.get(&2).is_none());
        assert!(cache.get(&1).is_some() && cache.get(&3).is_some());
        assert_eq!(cache.cached_bytes(), 8);
        cache.insert(4, Bytes::from(vec![0u8; 11])); // larger than the cache: not kept
        assert!(cache.get(&4).is_none());
    }

    #[tokio::test]
    async fn failed_loads_are_not_cached() {
        let cache = LoadingCache::<u32, String>::new(100);
        let failed = cache
            .get_or_load(1, || Box::pin(async { Err("down".to_owned()) }))
            .await;
        assert_eq!(failed, Err("down".to_owned()));
        let calls = Arc::new(AtomicUsize::new(0));
        cache.get_or_load(1, loader(&calls, b"up")).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
