//! `S3ObjectStore` against a real S3-compatible server: moto in server mode, started per test
//! as a child process on a free 127.0.0.1 port (moto's conditional PUTs are atomic, so the
//! create-only checks mean something). The shared conformance suite runs first, then what only
//! S3 has: multipart uploads, pagination, DeleteObjects batches, retries, timeouts, an
//! ambiguous put, and errors that retrying cannot fix.
//!
//! moto comes from `tests/e2e/requirements.txt` (`scripts/install-test-deps.sh`); without it
//! these tests fail rather than skip, so a missing dependency can never pass silently.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use kafscale_shared::object_store::{
    ObjectMeta, ObjectStore, ObjectStoreError, ObjectStoreOp, S3Config, S3Credentials,
    S3ObjectStore, conformance,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BUCKET: &str = "kafscale-test";
const MIB: usize = 1024 * 1024;
/// How long moto may take to start answering (it imports a lot of Python).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// A moto server child process; killed when dropped.
struct Moto {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Moto {
    /// Starts moto on a free port, waits until it answers and creates [`BUCKET`].
    fn start() -> Moto {
        let mut last_error = String::new();
        // The free port is found by binding and releasing it; another process may take it
        // before moto binds, so a failed start is retried on a new port.
        for _ in 0..3 {
            match Moto::try_start() {
                Ok(moto) => return moto,
                Err(e) => last_error = e,
            }
        }
        panic!("moto_server did not start: {last_error}");
    }

    fn try_start() -> Result<Moto, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("finding a free port: {e}"))?
            .port();
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let log = dir.path().join("moto.log");
        let log_file = std::fs::File::create(&log).map_err(|e| format!("log file: {e}"))?;
        let stderr = log_file.try_clone().map_err(|e| format!("log file: {e}"))?;
        let mut command = moto_command();
        command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(stderr);
        let child = command
            .spawn()
            .map_err(|e| format!("spawning {command:?}: {e}"))?;
        let mut moto = Moto {
            child,
            port,
            log,
            _dir: dir,
        };
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = moto.child.try_wait() {
                return Err(format!("moto exited with {status}: {}", moto.log_tail()));
            }
            if let Ok((status, _)) = moto.http("PUT", &format!("/{BUCKET}")) {
                if status == 200 {
                    return Ok(moto);
                }
                return Err(format!("creating the bucket answered {status}"));
            }
            if started.elapsed() > STARTUP_TIMEOUT {
                return Err(format!(
                    "moto did not answer within {STARTUP_TIMEOUT:?}: {}",
                    moto.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// One unsigned HTTP/1.1 request (moto does not check signatures): status and body.
    fn http(&self, method: &str, path: &str) -> std::io::Result<(u16, String)> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad response {response:?}")))?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok((status, body))
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `moto_server` from PATH, or `python3 -m moto.server`; fails the test if neither exists.
fn moto_command() -> Command {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("moto_server"))
            .find(|p| p.is_file())
    });
    if let Some(path) = on_path {
        return Command::new(path);
    }
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let has_module = Command::new(&python)
        .args(["-c", "import moto.server"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if has_module {
        let mut command = Command::new(python);
        command.args(["-m", "moto.server"]);
        return command;
    }
    panic!(
        "moto_server was not found on PATH and `{python} -m moto.server` is not importable: \
         run scripts/install-test-deps.sh (it installs the pinned moto[server] from \
         tests/e2e/requirements.txt)"
    );
}

fn config(endpoint: &str, bucket: &str) -> S3Config {
    let mut config = S3Config::new(bucket, "us-east-1");
    config.endpoint = Some(endpoint.to_owned());
    config.path_style = true;
    config.credentials = Some(S3Credentials {
        access_key_id: "testing".into(),
        secret_access_key: "testing".into(),
        session_token: None,
    });
    config.max_attempts = 3;
    config.initial_backoff = Duration::from_millis(20);
    config.max_backoff = Duration::from_millis(200);
    config.connect_timeout = Duration::from_secs(2);
    config.request_timeout = Duration::from_secs(20);
    config
}

async fn store(config: S3Config) -> S3ObjectStore {
    S3ObjectStore::new(config)
        .await
        .expect("S3ObjectStore::new")
}

/// A pseudo-random pattern, so misplaced parts are detected.
fn pattern(len: usize, seed: u64) -> Bytes {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_object_store_conforms() {
    let moto = Moto::start();
    let plain = store(config(&moto.endpoint(), BUCKET)).await;
    conformance::run_all(&plain, "conformance/").await;
    conformance::run_all(&plain, "").await;

    // A key prefix, multipart for the suite's 8 MiB object, and tiny pages and batches.
    let mut tweaked = config(&moto.endpoint(), BUCKET);
    tweaked.prefix = Some("cluster-a/".into());
    tweaked.multipart_threshold = 5 * MIB as u64;
    tweaked.multipart_part_size = 5 * MIB as u64;
    tweaked.list_page_size = 3;
    tweaked.delete_batch_size = 2;
    let prefixed = store(tweaked).await;
    conformance::run_all(&prefixed, "conformance/").await;

    // Everything was cleaned up, and the prefixed store wrote only under its prefix.
    assert_eq!(plain.list("").await.expect("list"), vec![]);
    let m = prefixed.metrics();
    assert!(
        m.get(ObjectStoreOp::List).requests > 10,
        "tiny pages mean many ListObjectsV2 requests: {:?}",
        m.get(ObjectStoreOp::List)
    );
    assert!(m.get(ObjectStoreOp::Put).bytes_out >= 8 * MIB as u64);
    assert!(m.get(ObjectStoreOp::Get).bytes_in >= 8 * MIB as u64);
    assert!(m.get(ObjectStoreOp::DeleteMany).requests >= 7);
    for (op, counts) in plain.metrics().snapshot() {
        assert_eq!(counts.errors, 0, "no failed requests for {}", op.name());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_upload_round_trip_and_create_only() {
    let moto = Moto::start();
    let mut c = config(&moto.endpoint(), BUCKET);
    c.multipart_threshold = 5 * MIB as u64;
    c.multipart_part_size = 5 * MIB as u64;
    let s3 = store(c).await;
    let data = pattern(12 * MIB, 42);
    let key = "multipart/12mib";

    s3.put(key, data.clone()).await.expect("multipart put");
    // Create, three parts (5 + 5 + 2 MiB), complete.
    assert_eq!(s3.metrics().get(ObjectStoreOp::Put).requests, 5);
    assert_eq!(
        s3.metrics().get(ObjectStoreOp::Put).bytes_out,
        data.len() as u64
    );
    assert_eq!(
        s3.head(key).await.expect("head"),
        Some(ObjectMeta {
            key: key.into(),
            size: data.len() as u64
        })
    );
    assert!(s3.get(key).await.expect("get") == data, "round trip");
    let across = (5 * MIB - 10) as u64..(10 * MIB + 10) as u64;
    assert!(
        s3.get_range(key, across.clone()).await.expect("get_range")
            == data.slice(across.start as usize..across.end as usize),
        "a range across part boundaries"
    );

    // Create-only holds for multipart (If-None-Match on completion) and for a single put.
    match s3.put(key, pattern(12 * MIB, 7)).await {
        Err(ObjectStoreError::AlreadyExists { key: k }) => assert_eq!(k, key),
        other => panic!("second multipart put must be AlreadyExists, got {other:?}"),
    }
    assert!(matches!(
        s3.put(key, Bytes::from_static(b"small")).await,
        Err(ObjectStoreError::AlreadyExists { .. })
    ));
    assert!(s3.get(key).await.expect("get") == data, "original kept");

    // The refused upload was aborted: no multipart upload is left open.
    let (status, body) = moto
        .http("GET", &format!("/{BUCKET}?uploads"))
        .expect("ListMultipartUploads");
    assert_eq!(status, 200, "{body}");
    assert!(
        !body.contains("<UploadId>"),
        "no incomplete multipart upload may be left: {body}"
    );
    s3.delete(key).await.expect("delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pagination_and_delete_many_over_a_thousand_keys() {
    const KEYS: usize = 1050;
    let moto = Moto::start();
    let s3 = store(config(&moto.endpoint(), BUCKET)).await;
    let keys: Vec<String> = (0..KEYS).map(|i| format!("many/{i:05}")).collect();
    let results: Vec<Result<(), ObjectStoreError>> = futures::stream::iter(keys.iter())
        .map(|k| s3.put(k, Bytes::from(k.clone())))
        .buffer_unordered(16)
        .collect()
        .await;
    for r in results {
        r.expect("put");
    }

    let listed = s3.list("many/").await.expect("list");
    let expected: Vec<ObjectMeta> = keys
        .iter()
        .map(|k| ObjectMeta {
            key: k.clone(),
            size: k.len() as u64,
        })
        .collect();
    assert_eq!(listed, expected, "every key, in order, across pages");
    assert_eq!(
        s3.metrics().get(ObjectStoreOp::List).requests,
        2,
        "1050 keys are two pages of at most 1000"
    );

    // Small pages: 100 keys in pages of 7 are 15 requests.
    let mut small = config(&moto.endpoint(), BUCKET);
    small.list_page_size = 7;
    small.delete_batch_size = 9;
    let small = store(small).await;
    let listed = small.list("many/000").await.expect("list small pages");
    assert_eq!(listed, expected[..100].to_vec());
    assert_eq!(small.metrics().get(ObjectStoreOp::List).requests, 15);

    // delete_many in batches of 9 over 30 keys (and a missing one): 4 requests.
    let mut doomed: Vec<String> = keys[..30].to_vec();
    doomed.push("many/never-written".into());
    small.delete_many(&doomed).await.expect("delete_many small");
    assert_eq!(small.metrics().get(ObjectStoreOp::DeleteMany).requests, 4);
    assert_eq!(
        s3.list("many/").await.expect("list").len(),
        KEYS - 30,
        "exactly the 30 keys are gone"
    );

    // The rest with S3's batch of 1000: 1020 keys are two requests.
    s3.delete_many(&keys).await.expect("delete_many");
    assert_eq!(s3.metrics().get(ObjectStoreOp::DeleteMany).requests, 2);
    assert_eq!(s3.list("").await.expect("list"), vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_gives_a_retryable_error_in_time() {
    let mut moto = Moto::start();
    let mut c = config(&moto.endpoint(), BUCKET);
    c.request_timeout = Duration::from_secs(2);
    c.operation_timeout = Duration::from_secs(5);
    let s3 = store(c).await;
    s3.put("stopped/obj", Bytes::from_static(b"data"))
        .await
        .expect("put while the server runs");
    moto.kill();

    for op in ["get", "put", "list"] {
        let started = Instant::now();
        let result = match op {
            "get" => s3.get("stopped/obj").await.map(|_| ()),
            "put" => s3.put("stopped/other", Bytes::from_static(b"x")).await,
            _ => s3.list("stopped/").await.map(|_| ()),
        };
        let elapsed = started.elapsed();
        let err = result.expect_err("a stopped server cannot answer");
        assert!(
            matches!(err, ObjectStoreError::Io { .. }) && err.is_retryable(),
            "{op} must fail with a retryable Io error, got {err:?}"
        );
        assert!(
            elapsed < Duration::from_secs(5),
            "{op} gave up after {elapsed:?}"
        );
    }
    let get = s3.metrics().get(ObjectStoreOp::Get);
    assert_eq!(
        (get.requests, get.errors),
        (3, 3),
        "max_attempts requests, all failed"
    );
}

/// A server that accepts connections and never answers.
async fn silent_server() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_times_out_per_attempt_and_per_operation() {
    let (addr, task) = silent_server().await;
    let mut c = config(&format!("http://{addr}"), BUCKET);
    c.request_timeout = Duration::from_millis(300);
    c.operation_timeout = Duration::from_secs(10);
    c.max_attempts = 2;
    let s3 = store(c).await;
    let started = Instant::now();
    let err = s3.get("silent/obj").await.expect_err("no answer");
    let elapsed = started.elapsed();
    match &err {
        ObjectStoreError::Io { key, source } => {
            assert_eq!(key, "silent/obj");
            assert_eq!(source.kind(), std::io::ErrorKind::TimedOut);
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(err.is_retryable());
    assert!(
        elapsed >= Duration::from_millis(600) && elapsed < Duration::from_secs(3),
        "two attempts of 300 ms, got {elapsed:?}"
    );
    assert_eq!(s3.metrics().get(ObjectStoreOp::Get).requests, 2);

    // The operation timeout cuts retries short.
    let mut c = config(&format!("http://{addr}"), BUCKET);
    c.request_timeout = Duration::from_millis(400);
    c.operation_timeout = Duration::from_millis(600);
    c.max_attempts = 10;
    let s3 = store(c).await;
    let started = Instant::now();
    let err = s3.head("silent/obj").await.expect_err("no answer");
    assert!(err.is_retryable(), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "operation_timeout bounds the whole request: {:?}",
        started.elapsed()
    );
    task.abort();
}

/// A TCP proxy to `target` that swallows the responses of the first `swallow` connections
/// (forwarding their requests), as if the network lost them.
async fn lossy_proxy(target: SocketAddr, swallow: usize) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let lose = seen.fetch_add(1, Ordering::SeqCst) < swallow;
            tokio::spawn(async move {
                let Ok(mut server) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                if !lose {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    return;
                }
                let (mut client_read, _client_write) = client.split();
                let (mut server_read, mut server_write) = server.split();
                let upstream = tokio::io::copy(&mut client_read, &mut server_write);
                let drain = async {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = server_read.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                    }
                };
                let _ = tokio::join!(upstream, drain);
                let _ = server_write.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_whose_answer_was_lost_is_settled_by_reading_back() {
    let moto = Moto::start();
    let target = SocketAddr::from(([127, 0, 0, 1], moto.port));
    let direct = store(config(&moto.endpoint(), BUCKET)).await;

    // The first attempt lands but its answer is lost; the retry meets 412 from our own object.
    let proxy = lossy_proxy(target, 1).await;
    let mut c = config(&format!("http://{proxy}"), BUCKET);
    c.request_timeout = Duration::from_secs(3);
    let s3 = store(c).await;
    let data = Bytes::from_static(b"segment bytes");
    s3.put("lost/answer", data.clone())
        .await
        .expect("a put whose first answer was lost is still Ok");
    assert_eq!(direct.get("lost/answer").await.expect("get"), data);
    let put = s3.metrics().get(ObjectStoreOp::Put);
    assert_eq!((put.requests, put.errors), (2, 1));

    // The same situation where someone else's object holds the key stays AlreadyExists.
    direct
        .put("lost/taken", Bytes::from_static(b"theirs"))
        .await
        .expect("put");
    let proxy = lossy_proxy(target, 1).await;
    let mut c = config(&format!("http://{proxy}"), BUCKET);
    c.request_timeout = Duration::from_secs(3);
    let s3 = store(c).await;
    assert!(matches!(
        s3.put("lost/taken", Bytes::from_static(b"ours")).await,
        Err(ObjectStoreError::AlreadyExists { .. })
    ));
    assert_eq!(
        direct.get("lost/taken").await.expect("get"),
        Bytes::from_static(b"theirs")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_is_rejected_not_retried() {
    let moto = Moto::start();
    let s3 = store(config(&moto.endpoint(), "no-such-bucket")).await;
    for (op, result) in [
        ("get", s3.get("k").await.map(|_| ())),
        ("put", s3.put("k", Bytes::from_static(b"x")).await),
        ("list", s3.list("").await.map(|_| ())),
    ] {
        match result {
            Err(e @ ObjectStoreError::Rejected { .. }) => {
                assert!(!e.is_retryable(), "{op}: {e}");
                assert!(e.to_string().contains("NoSuchBucket"), "{op}: {e}");
            }
            other => panic!("{op} on a missing bucket must be Rejected, got {other:?}"),
        }
    }
    assert_eq!(
        s3.metrics().get(ObjectStoreOp::Get).requests,
        1,
        "not retried"
    );
    // An invalid configuration is refused up front.
    let mut bad = config(&moto.endpoint(), BUCKET);
    bad.multipart_part_size = 1024;
    assert!(matches!(
        S3ObjectStore::new(bad).await,
        Err(ObjectStoreError::Rejected { .. })
    ));
}
