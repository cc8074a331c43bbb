//! A local-filesystem [`ObjectStore`] for standalone deployments and tests.
//!
//! Each key is a relative path under the store's root (`/` separates directories), so the data
//! is easy to inspect and back up with ordinary tools. Objects are immutable and created at most
//! once, and a crash must never leave a torn or half-written object visible under its key, so
//! `put` writes a uniquely named temp file next to the target, fsyncs it, and publishes it with
//! `hard_link`: the link fails if the key already exists, which makes the create-only check
//! atomic even with concurrent writers (a `rename` would silently replace the existing object).
//! The parent directory is fsynced last so the new name itself survives a crash.
//!
//! Temp files start with [`TEMP_PREFIX`]; `list` never returns them, keys may not use that
//! prefix in any segment, and [`LocalFsObjectStore::new`] removes the ones a crash left behind.
//!
//! Limitation of the mapping to directories: a key cannot also be a directory of other keys
//! (`a` and `a/b` cannot both exist); such a `put` fails with [`ObjectStoreError::InvalidKey`].
//! Directories emptied by `delete` are left in place.
//!
//! Every blocking filesystem call runs in [`tokio::task::spawn_blocking`].
//!
//! **Objects are written with direct I/O where the filesystem allows it** (`O_DIRECT` on Linux).
//! Segments are written once and read back rarely (the fetch tier caches what it reads, and in
//! standalone mode it is handed each segment as it is written), so copying them into the page
//! cache only costs CPU: on the 2-core test machine a buffered write of 1 GiB costs 2.1 s of
//! kernel CPU (copying into page-cache folios and reclaiming old ones), a direct write 0.3 s
//! (`dd bs=4M count=256 conv=fsync`, with and without `oflag=direct`). Direct I/O needs
//! block-aligned buffers and lengths, so the data goes through a reused aligned buffer and the
//! file is truncated to its real length after the last (zero-padded) block. Filesystems that
//! refuse `O_DIRECT` (tmpfs) get the ordinary buffered write.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::memory::check_range;
use super::{ObjectMeta, ObjectStore, ObjectStoreError};

/// Name prefix of the temp files `put` writes before publishing an object.
const TEMP_PREFIX: &str = ".tmp-";

/// Temp files at least this old (since their last write) are considered left over by a crash.
///
/// A live `put` touches its temp file until just before publishing it, so the grace period only
/// has to cover the gap between its last write and the link; it is generous so that several
/// stores opened on one root (e.g. by different components of one process) never delete each
/// other's in-flight temp files.
const STALE_TEMP_MIN_AGE: Duration = Duration::from_secs(10 * 60);

/// Longest path segment most filesystems accept (bytes).
const MAX_SEGMENT_LEN: usize = 255;

/// An [`ObjectStore`] that keeps each object as a file under a root directory.
#[derive(Debug, Clone)]
pub struct LocalFsObjectStore {
    root: Arc<Path>,
}

impl LocalFsObjectStore {
    /// Opens (creating it if needed) a store rooted at `root`, and removes temp files that a
    /// crashed `put` left behind (those older than a grace period of ten minutes).
    ///
    /// This does blocking I/O; call it at startup or from a blocking context.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, ObjectStoreError> {
        let root: PathBuf = root.into();
        fs::create_dir_all(&root).map_err(|e| io_err(&root.display().to_string(), e))?;
        let store = LocalFsObjectStore { root: root.into() };
        let removed = store.remove_stale_temp_files(STALE_TEMP_MIN_AGE)?;
        if removed > 0 {
            tracing::info!(root = %store.root.display(), removed, "removed stale object-store temp files");
        }
        Ok(store)
    }

    /// The directory holding the objects.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Removes every temp file (left by an interrupted `put`) whose last write is at least
    /// `min_age` ago, and returns how many were removed.
    ///
    /// Only pass a short `min_age` when no other `put` on this root can be in flight: an
    /// in-flight `put` whose temp file is removed fails with a retryable I/O error.
    /// This does blocking I/O; call it at startup or from a blocking context.
    pub fn remove_stale_temp_files(&self, min_age: Duration) -> Result<usize, ObjectStoreError> {
        let mut removed = 0;
        remove_temp_files_in(&self.root, min_age, &mut removed)?;
        Ok(removed)
    }
}

#[async_trait]
impl ObjectStore for LocalFsObjectStore {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), ObjectStoreError> {
        validate_key(key)?;
        let root = Arc::clone(&self.root);
        let owned_key = key.to_owned();
        blocking(key, move || put_blocking(&root, &owned_key, &data)).await
    }

    async fn get(&self, key: &str) -> Result<Bytes, ObjectStoreError> {
        validate_key(key)?;
        let path = self.root.join(key);
        let owned_key = key.to_owned();
        blocking(key, move || {
            let (mut file, size) = open_object(&path, &owned_key)?;
            let mut data = Vec::with_capacity(to_usize(&owned_key, size)?);
            file.read_to_end(&mut data)
                .map_err(|e| io_err(&owned_key, e))?;
            Ok(Bytes::from(data))
        })
        .await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, ObjectStoreError> {
        validate_key(key)?;
        let path = self.root.join(key);
        let owned_key = key.to_owned();
        blocking(key, move || {
            let (file, size) = open_object(&path, &owned_key)?;
            check_range(&owned_key, &range, size)?;
            read_block(&path, file, range).map_err(|e| io_err(&owned_key, e))
        })
        .await
    }

    async fn get_range_capped(
        &self,
        key: &str,
        range: Range<u64>,
    ) -> Result<Bytes, ObjectStoreError> {
        validate_key(key)?;
        let path = self.root.join(key);
        let owned_key = key.to_owned();
        blocking(key, move || {
            let (file, size) = open_object(&path, &owned_key)?;
            let range = range.start..range.end.min(size);
            check_range(&owned_key, &range, size)?;
            read_block(&path, file, range).map_err(|e| io_err(&owned_key, e))
        })
        .await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, ObjectStoreError> {
        validate_key(key)?;
        let path = self.root.join(key);
        let owned_key = key.to_owned();
        blocking(key, move || match fs::metadata(&path) {
            Ok(meta) if meta.is_file() => Ok(Some(ObjectMeta {
                key: owned_key,
                size: meta.len(),
            })),
            Ok(_) => Ok(None),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(io_err(&owned_key, e)),
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectStoreError> {
        let root = Arc::clone(&self.root);
        let owned_prefix = prefix.to_owned();
        blocking(prefix, move || list_blocking(&root, &owned_prefix)).await
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectStoreError> {
        validate_key(key)?;
        let root = Arc::clone(&self.root);
        let owned_key = key.to_owned();
        blocking(key, move || {
            let path = root.join(&owned_key);
            match fs::remove_file(&path) {
                Ok(()) => {
                    sync_dir(&parent_dir(&root, &owned_key)).map_err(|e| io_err(&owned_key, e))
                }
                Err(e) if is_missing(&e) || path.is_dir() => Ok(()),
                Err(e) => Err(io_err(&owned_key, e)),
            }
        })
        .await
    }
}

/// Checks that `key` maps to a path strictly inside the root and never names a temp file.
pub(crate) fn validate_key(key: &str) -> Result<(), ObjectStoreError> {
    let invalid = |reason| {
        Err(ObjectStoreError::InvalidKey {
            key: key.to_owned(),
            reason,
        })
    };
    if key.is_empty() {
        return invalid("empty key");
    }
    if key.starts_with('/') {
        return invalid("absolute key (leading '/')");
    }
    if key.contains('\0') {
        return invalid("key contains NUL");
    }
    if cfg!(windows) && key.contains(['\\', ':']) {
        return invalid("key contains '\\' or ':'");
    }
    for segment in key.split('/') {
        if segment.is_empty() {
            return invalid("empty path segment ('//' or trailing '/')");
        }
        if segment == "." || segment == ".." {
            return invalid("'.' or '..' path segment");
        }
        if segment.starts_with(TEMP_PREFIX) {
            return invalid("path segment starts with the reserved temp-file prefix '.tmp-'");
        }
        if segment.len() > MAX_SEGMENT_LEN {
            return invalid("path segment longer than 255 bytes");
        }
    }
    Ok(())
}

/// Runs blocking filesystem work off the async runtime's worker threads.
async fn blocking<T, F>(key: &str, work: F) -> Result<T, ObjectStoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ObjectStoreError> + Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(io_err(
            key,
            io::Error::other(format!("blocking task cancelled: {e}")),
        )),
    }
}

fn put_blocking(root: &Path, key: &str, data: &[u8]) -> Result<(), ObjectStoreError> {
    let dir = ensure_parent_dir(root, key)?;
    let path = root.join(key);
    let tmp = dir.join(format!("{TEMP_PREFIX}{}", uuid::Uuid::new_v4().simple()));

    let written = write_new_file(&tmp, data);
    if let Err(e) = written {
        remove_temp(&tmp);
        return Err(io_err(key, e));
    }

    // The create-only publish: fails with AlreadyExists if the key is taken, atomically.
    let linked = fs::hard_link(&tmp, &path);
    remove_temp(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists && path.is_dir() => {
            return Err(ObjectStoreError::InvalidKey {
                key: key.to_owned(),
                reason: "key is a directory of other objects",
            });
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            return Err(ObjectStoreError::AlreadyExists {
                key: key.to_owned(),
            });
        }
        Err(e) => return Err(io_err(key, e)),
    }
    sync_dir(&dir).map_err(|e| io_err(key, e))
}

/// Alignment of direct-I/O buffers, file offsets and lengths: the largest logical block size
/// in common use (512 and 4096 are), so it suits every device.
const DIRECT_IO_ALIGN: usize = 4096;

/// Bytes copied into the aligned buffer and written per `write` call in direct-I/O mode.
const DIRECT_IO_CHUNK: usize = 4 * 1024 * 1024;

/// Creates `path` (which must not exist), writes `data` and fsyncs it: with direct I/O where
/// the filesystem supports it, else through the page cache.
fn write_new_file(path: &Path, data: &[u8]) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
        {
            Ok(file) => return write_direct(file, data),
            // EINVAL: this filesystem does not do direct I/O (tmpfs); write it buffered.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(e),
        }
    }
    let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
    file.write_all(data)?;
    file.sync_all()
}

thread_local! {
    /// The aligned staging buffer of direct writes, one per blocking thread and reused, so a
    /// write does not fault in fresh pages for every chunk.
    static DIRECT_IO_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Writes `data` to a file opened with `O_DIRECT`: block-aligned chunks from the aligned
/// staging buffer, the last one zero-padded, then truncates the file to `data.len()` and
/// fsyncs it (direct I/O bypasses the page cache but not the need to persist metadata).
#[cfg(target_os = "linux")]
fn write_direct(mut file: File, data: &[u8]) -> io::Result<()> {
    let total = data.len();
    // A page-aligned object (segments are, see `buffer_pool`) is written straight from its
    // memory, all but a last partial block.
    let direct_len = if data.as_ptr().align_offset(DIRECT_IO_ALIGN) == 0 {
        data.len() - data.len() % DIRECT_IO_ALIGN
    } else {
        0
    };
    file.write_all(&data[..direct_len])?;
    let data = &data[direct_len..];
    DIRECT_IO_BUFFER.with(|cell| {
        let mut buffer = cell.borrow_mut();
        if buffer.len() < DIRECT_IO_CHUNK + DIRECT_IO_ALIGN {
            buffer.resize(DIRECT_IO_CHUNK + DIRECT_IO_ALIGN, 0);
        }
        // Safe alignment without `unsafe`: skip to the first aligned byte of the buffer.
        let skip = buffer.as_ptr().align_offset(DIRECT_IO_ALIGN);
        let aligned = &mut buffer[skip..skip + DIRECT_IO_CHUNK];
        for chunk in data.chunks(DIRECT_IO_CHUNK) {
            let padded = chunk.len().next_multiple_of(DIRECT_IO_ALIGN);
            aligned[..chunk.len()].copy_from_slice(chunk);
            aligned[chunk.len()..padded].fill(0);
            file.write_all(&aligned[..padded])?;
        }
        Ok::<(), io::Error>(())
    })?;
    if !total.is_multiple_of(DIRECT_IO_ALIGN) {
        file.set_len(total as u64)?;
    }
    file.sync_all()
}

/// Blocks at least this long are read with direct I/O (when aligned): the fetch tier's block
/// reads of whole segments, which would otherwise fill the page cache with data it caches itself.
const DIRECT_READ_MIN: u64 = 64 * 1024;

/// Direct reads' buffers of at least this size are kept for later reads (up to
/// [`POOLED_READ_BUFFERS`] of them) once the `Bytes` made of them are dropped: a fresh buffer
/// costs a page fault and the zeroing of every 4 KiB page as the read fills it, which was a
/// fifth of the server's CPU while a consumer read a topic back from disk.
const POOLED_READ_MIN: usize = 1024 * 1024;
const POOLED_READ_BUFFERS: usize = 4;

static FREE_READ_BUFFERS: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());

/// A direct read's buffer and where the data is in it; goes back to the free buffers when
/// dropped (as the owner of the `Bytes` it becomes).
struct ReadBuffer {
    buffer: Vec<u8>,
    data: Range<usize>,
}

impl ReadBuffer {
    /// A buffer of at least `len` bytes (at most twice that when reused).
    fn take(len: usize) -> Vec<u8> {
        if len >= POOLED_READ_MIN {
            let mut free = FREE_READ_BUFFERS.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = free.iter().position(|b| (len..=2 * len).contains(&b.len())) {
                return free.swap_remove(i);
            }
        }
        vec![0u8; len]
    }
}

impl AsRef<[u8]> for ReadBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.buffer[self.data.clone()]
    }
}

impl Drop for ReadBuffer {
    fn drop(&mut self) {
        if self.buffer.len() < POOLED_READ_MIN {
            return;
        }
        let mut free = FREE_READ_BUFFERS.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < POOLED_READ_BUFFERS {
            free.push(std::mem::take(&mut self.buffer));
        }
    }
}

/// Reads `range` (inside the file) of `file`, opened at `path`: every ranged read of the store.
/// Aligned reads of whole blocks (the fetch tier's block reads) bypass the page cache (see the
/// module docs), into a buffer whose aligned part becomes the returned `Bytes` without a copy.
fn read_block(path: &Path, mut file: File, range: Range<u64>) -> io::Result<Bytes> {
    let len = usize::try_from(range.end - range.start).map_err(io::Error::other)?;
    #[cfg(target_os = "linux")]
    if range.start.is_multiple_of(DIRECT_IO_ALIGN as u64) && len as u64 >= DIRECT_READ_MIN {
        use std::os::unix::fs::{FileExt, OpenOptionsExt};
        match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
        {
            Ok(direct) => {
                let padded = len.next_multiple_of(DIRECT_IO_ALIGN);
                let mut buffer = ReadBuffer::take(padded + DIRECT_IO_ALIGN);
                let skip = buffer.as_ptr().align_offset(DIRECT_IO_ALIGN);
                let mut done = 0;
                while done < len {
                    let n = direct.read_at(
                        &mut buffer[skip + done..skip + padded],
                        range.start + done as u64,
                    )?;
                    if n == 0 {
                        return Err(io::Error::new(
                            ErrorKind::UnexpectedEof,
                            "object shorter than its size",
                        ));
                    }
                    done += n;
                }
                return Ok(Bytes::from_owner(ReadBuffer {
                    buffer,
                    data: skip..skip + len,
                }));
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(e),
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = path;
    let mut data = vec![0; len];
    file.seek(SeekFrom::Start(range.start))?;
    file.read_exact(&mut data)?;
    Ok(Bytes::from(data))
}

/// Creates the directories leading to `key`, fsyncing each parent whose entries changed, and
/// returns the directory that will hold the object.
fn ensure_parent_dir(root: &Path, key: &str) -> Result<PathBuf, ObjectStoreError> {
    let dir = parent_dir(root, key);
    if dir.is_dir() {
        return Ok(dir);
    }
    let Some((rel_dir, _)) = key.rsplit_once('/') else {
        // The root itself is missing (removed after `new`).
        return Err(io_err(
            key,
            io::Error::new(ErrorKind::NotFound, "store root is missing"),
        ));
    };
    let mut current = root.to_path_buf();
    for segment in rel_dir.split('/') {
        let next = current.join(segment);
        match fs::create_dir(&next) {
            // Makes the new directory entry durable; a concurrent creator does the same.
            Ok(()) => sync_dir(&current).map_err(|e| io_err(key, e))?,
            Err(e) if e.kind() == ErrorKind::AlreadyExists && next.is_dir() => {}
            Err(e)
                if e.kind() == ErrorKind::AlreadyExists || e.kind() == ErrorKind::NotADirectory =>
            {
                return Err(ObjectStoreError::InvalidKey {
                    key: key.to_owned(),
                    reason: "a prefix of the key is an existing object",
                });
            }
            Err(e) => return Err(io_err(key, e)),
        }
        current = next;
    }
    Ok(dir)
}

/// The directory that holds (or will hold) the object `key`.
fn parent_dir(root: &Path, key: &str) -> PathBuf {
    match key.rsplit_once('/') {
        Some((dir, _)) => root.join(dir),
        None => root.to_path_buf(),
    }
}

/// Opens an object for reading and returns it with its size.
fn open_object(path: &Path, key: &str) -> Result<(File, u64), ObjectStoreError> {
    let not_found = || ObjectStoreError::NotFound {
        key: key.to_owned(),
    };
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if is_missing(&e) => return Err(not_found()),
        Err(e) => return Err(io_err(key, e)),
    };
    let meta = file.metadata().map_err(|e| io_err(key, e))?;
    if !meta.is_file() {
        return Err(not_found());
    }
    Ok((file, meta.len()))
}

fn list_blocking(root: &Path, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectStoreError> {
    // Start at the deepest directory the prefix names in full; only the entries of that
    // directory need filtering by the rest of the prefix.
    let (dir_part, name_prefix) = match prefix.rsplit_once('/') {
        Some((dir, name)) => (dir, name),
        None => ("", prefix),
    };
    if prefix.starts_with('/') || (!dir_part.is_empty() && validate_key(dir_part).is_err()) {
        // No valid key starts with this prefix.
        return Ok(Vec::new());
    }
    let (dir, key_base) = if dir_part.is_empty() {
        (root.to_path_buf(), String::new())
    } else {
        (root.join(dir_part), format!("{dir_part}/"))
    };
    let mut objects = Vec::new();
    walk(&dir, &key_base, name_prefix, prefix, &mut objects)?;
    objects.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    Ok(objects)
}

/// Collects the objects under `dir` (whose keys start with `key_base`), keeping only entries of
/// `dir` itself whose names start with `name_prefix`.
fn walk(
    dir: &Path,
    key_base: &str,
    name_prefix: &str,
    prefix: &str,
    out: &mut Vec<ObjectMeta>,
) -> Result<(), ObjectStoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        // Missing, or deleted while we walk: it holds no objects.
        Err(e) if is_missing(&e) => return Ok(()),
        Err(e) => return Err(io_err(prefix, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io_err(prefix, e))?;
        let file_name = entry.file_name();
        // Names that are not UTF-8 cannot be keys.
        let Some(name) = file_name.to_str() else {
            continue;
        };
        if name.starts_with(TEMP_PREFIX) || !name.starts_with(name_prefix) {
            continue;
        }
        let file_type = match entry.file_type() {
            Ok(file_type) => file_type,
            Err(e) if is_missing(&e) => continue,
            Err(e) => return Err(io_err(prefix, e)),
        };
        let key = format!("{key_base}{name}");
        if file_type.is_dir() {
            walk(&entry.path(), &format!("{key}/"), "", prefix, out)?;
        } else if file_type.is_file() {
            match entry.metadata() {
                Ok(meta) => out.push(ObjectMeta {
                    key,
                    size: meta.len(),
                }),
                Err(e) if is_missing(&e) => {}
                Err(e) => return Err(io_err(prefix, e)),
            }
        }
    }
    Ok(())
}

fn remove_temp_files_in(
    dir: &Path,
    min_age: Duration,
    removed: &mut usize,
) -> Result<(), ObjectStoreError> {
    let dir_err = |e| io_err(&dir.display().to_string(), e);
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if is_missing(&e) => return Ok(()),
        Err(e) => return Err(dir_err(e)),
    };
    for entry in entries {
        let entry = entry.map_err(dir_err)?;
        let file_type = match entry.file_type() {
            Ok(file_type) => file_type,
            Err(e) if is_missing(&e) => continue,
            Err(e) => return Err(dir_err(e)),
        };
        if file_type.is_dir() {
            remove_temp_files_in(&entry.path(), min_age, removed)?;
            continue;
        }
        let is_temp = entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.starts_with(TEMP_PREFIX));
        if !file_type.is_file() || !is_temp {
            continue;
        }
        let age = match entry.metadata().and_then(|meta| meta.modified()) {
            // A modification time in the future counts as brand new.
            Ok(modified) => modified.elapsed().unwrap_or(Duration::ZERO),
            Err(e) if is_missing(&e) => continue,
            Err(e) => return Err(dir_err(e)),
        };
        if age < min_age {
            continue;
        }
        match fs::remove_file(entry.path()) {
            Ok(()) => *removed += 1,
            Err(e) if is_missing(&e) => {}
            Err(e) => return Err(dir_err(e)),
        }
    }
    Ok(())
}

/// Removes a temp file; a failure only leaks disk space until the next stale-file cleanup.
fn remove_temp(tmp: &Path) {
    match fs::remove_file(tmp) {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            tracing::warn!(path = %tmp.display(), error = %e, "could not remove object-store temp file");
        }
        _ => {}
    }
}

/// Makes the entries of `dir` (a file created, linked or removed in it) durable.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Directories cannot be opened for fsync on this platform.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

/// Whether an error means "no such file": missing, or a path component is a file.
fn is_missing(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory)
}

fn to_usize(key: &str, len: u64) -> Result<usize, ObjectStoreError> {
    usize::try_from(len)
        .map_err(|_| io_err(key, io::Error::other("object too large for this platform")))
}

fn io_err(key: &str, source: io::Error) -> ObjectStoreError {
    ObjectStoreError::Io {
        key: key.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    fn store() -> (tempfile::TempDir, LocalFsObjectStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalFsObjectStore::new(dir.path().join("objects")).unwrap();
        (dir, store)
    }

    fn write_temp(path: &Path, age: Duration) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut file = File::create(path).unwrap();
        file.write_all(b"partial").unwrap();
        file.set_modified(SystemTime::now() - age).unwrap();
    }

    fn invalid<T>(result: Result<T, ObjectStoreError>) -> bool {
        matches!(result, Err(ObjectStoreError::InvalidKey { .. }))
    }

    /// Sizes around the direct-I/O block and chunk boundaries round-trip byte for byte (the
    /// padded last block is cut off again), whether or not the filesystem took `O_DIRECT`.
    #[tokio::test]
    async fn objects_of_unaligned_sizes_round_trip() {
        let (_dir, store) = store();
        let sizes = [
            0,
            1,
            DIRECT_IO_ALIGN - 1,
            DIRECT_IO_ALIGN,
            DIRECT_IO_ALIGN + 1,
            DIRECT_IO_CHUNK - 1,
            DIRECT_IO_CHUNK,
            2 * DIRECT_IO_CHUNK + 7,
        ];
        let pool = crate::buffer_pool::BufferPool::new(1);
        for size in sizes {
            let data: Bytes = (0..size).map(|i| (i * 31 % 251) as u8).collect();
            // Also page-aligned, as segments are: written from its own memory.
            let aligned = pool.build(size, |b| b.copy_from_slice(&data));
            assert_eq!(aligned.as_ptr().align_offset(DIRECT_IO_ALIGN), 0);
            for (kind, bytes) in [("plain", data.clone()), ("aligned", aligned)] {
                let key = format!("sizes/{kind}/{size}");
                store.put(&key, bytes).await.unwrap();
                assert_eq!(store.get(&key).await.unwrap(), data, "{kind} size {size}");
                assert_eq!(store.head(&key).await.unwrap().unwrap().size, size as u64);
            }
        }
    }

    #[test]
    fn valid_keys_are_accepted() {
        for key in [
            "a",
            "a/b/c",
            "topic/0/00000000000000000042.seg",
            ".hidden",
            "a/.tmp",
            "a/tmp-x",
            "a..b/c.d",
            "spaces and ü",
            &"x".repeat(255),
        ] {
            validate_key(key).unwrap_or_else(|e| panic!("{key:?} should be valid: {e}"));
        }
    }

    #[test]
    fn invalid_keys_are_rejected() {
        for key in [
            "",
            "/abs",
            "/",
            "a/",
            "a//b",
            "./a",
            "a/./b",
            "..",
            "a/../../etc/passwd",
            "a/..",
            "nul\0byte",
            ".tmp-123",
            "a/.tmp-x/b",
            &"x".repeat(256),
        ] {
            assert!(
                matches!(validate_key(key), Err(ObjectStoreError::InvalidKey { .. })),
                "{key:?} should be invalid"
            );
        }
    }

    #[tokio::test]
    async fn operations_reject_invalid_keys() {
        let (_dir, store) = store();
        assert!(invalid(
            store.put("../escape", Bytes::from_static(b"x")).await
        ));
        assert!(invalid(store.get("a//b").await));
        assert!(invalid(store.get_range("/abs", 0..0).await));
        assert!(invalid(store.head("").await));
        assert!(invalid(store.delete("a/./b").await));
        // Nothing escaped the root.
        assert!(!store.root().parent().unwrap().join("escape").exists());
        // A prefix no valid key can have lists nothing (and never walks outside the root).
        for prefix in ["../", "/", "a//", "./x", ".tmp-"] {
            assert_eq!(
                store.list(prefix).await.unwrap(),
                Vec::new(),
                "list({prefix:?})"
            );
        }
    }

    #[tokio::test]
    async fn new_removes_stale_temp_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("objects");
        let seed = LocalFsObjectStore::new(&root).unwrap();
        seed.put("t/0/seg", Bytes::from_static(b"data"))
            .await
            .unwrap();

        let stale_top = root.join(".tmp-crashed1");
        let stale_nested = root.join("t/0/.tmp-crashed2");
        let fresh = root.join("t/0/.tmp-inflight");
        write_temp(&stale_top, Duration::from_secs(3600));
        write_temp(&stale_nested, Duration::from_secs(3600));
        write_temp(&fresh, Duration::ZERO);
        // Temp files are never listed, even before cleanup.
        assert_eq!(seed.list("").await.unwrap().len(), 1);

        let store = LocalFsObjectStore::new(&root).unwrap();
        assert!(
            !stale_top.exists() && !stale_nested.exists(),
            "stale temp files are removed"
        );
        assert!(
            fresh.exists(),
            "a recent temp file may belong to an in-flight put and is kept"
        );
        assert_eq!(
            store.get("t/0/seg").await.unwrap(),
            Bytes::from_static(b"data"),
            "objects are kept"
        );

        assert_eq!(store.remove_stale_temp_files(Duration::ZERO).unwrap(), 1);
        assert!(!fresh.exists());
        let keys: Vec<String> = store
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect();
        assert_eq!(keys, ["t/0/seg"]);
    }

    #[tokio::test]
    async fn put_leaves_no_temp_files() {
        let (_dir, store) = store();
        store.put("a/b", Bytes::from_static(b"1")).await.unwrap();
        assert!(store.put("a/b", Bytes::from_static(b"2")).await.is_err());
        assert_eq!(store.remove_stale_temp_files(Duration::ZERO).unwrap(), 0);
        let names: Vec<_> = fs::read_dir(store.root().join("a"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["b"]);
    }

    #[tokio::test]
    async fn key_and_directory_cannot_collide() {
        let (_dir, store) = store();
        store.put("a", Bytes::from_static(b"file")).await.unwrap();
        assert!(matches!(
            store.put("a/b", Bytes::from_static(b"x")).await,
            Err(ObjectStoreError::InvalidKey { .. })
        ));
        assert!(matches!(
            store.get("a/b").await,
            Err(ObjectStoreError::NotFound { .. })
        ));
        assert_eq!(store.head("a/b").await.unwrap(), None);
        store.delete("a/b").await.unwrap();

        store.put("d/e", Bytes::from_static(b"x")).await.unwrap();
        assert!(matches!(
            store.put("d", Bytes::from_static(b"x")).await,
            Err(ObjectStoreError::InvalidKey { .. })
        ));
        assert!(matches!(
            store.get("d").await,
            Err(ObjectStoreError::NotFound { .. })
        ));
        assert_eq!(store.head("d").await.unwrap(), None);
        store.delete("d").await.unwrap();
        assert_eq!(store.get("d/e").await.unwrap(), Bytes::from_static(b"x"));
    }

    #[tokio::test]
    async fn objects_survive_reopen() {
        let (_dir, store) = store();
        store
            .put("x/y", Bytes::from_static(b"persisted"))
            .await
            .unwrap();
        let reopened = LocalFsObjectStore::new(store.root()).unwrap();
        assert_eq!(
            reopened.get("x/y").await.unwrap(),
            Bytes::from_static(b"persisted")
        );
        assert!(matches!(
            reopened.put("x/y", Bytes::new()).await,
            Err(ObjectStoreError::AlreadyExists { .. })
        ));
    }
}
