//! The Kafka wire server core against real sockets: ApiVersions negotiation, response header
//! versions, in-order answers to pipelined requests, frame limits, malformed input (the one
//! connection closes, the server keeps serving) and graceful shutdown.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use common::{
    Counters, DelayHandler, IO_TIMEOUT, Read, TestServer, call, decode_response, delayed_metadata,
    echoed_names, encode_request, expect_closed, expect_frame, raw_request, read_frame, write_all,
    write_frame,
};
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse, MetadataRequest};
use kafka_protocol::protocol::{Decodable, StrBytes};
use kafscale_shared::wire::WireConfig;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// (api key, min, max) as advertised for [`DelayHandler`]: Metadata 0-12 plus ApiVersions 0-4.
const ADVERTISED: [(i16, i16, i16); 2] = [(3, 0, 12), (18, 0, 4)];

fn listed(response: &ApiVersionsResponse) -> Vec<(i16, i16, i16)> {
    response
        .api_keys
        .iter()
        .map(|a| (a.api_key, a.min_version, a.max_version))
        .collect()
}

async fn delay_server(config: WireConfig) -> (TestServer, Arc<Counters>) {
    let handler = DelayHandler::default();
    let counters = handler.counters.clone();
    (TestServer::start(Arc::new(handler), config).await, counters)
}

fn api_versions_request(version: i16) -> ApiVersionsRequest {
    let mut r = ApiVersionsRequest::default();
    if version >= 3 {
        r.client_software_name = StrBytes::from_static_str("kafscale-wire-test");
        r.client_software_version = StrBytes::from_static_str("1.0");
    }
    r
}

/// ApiVersions v0 answered on `stream` (a liveness probe).
async fn assert_serves_api_versions(stream: &mut TcpStream, correlation_id: i32) {
    let response = call(stream, 0, correlation_id, &api_versions_request(0)).await;
    assert_eq!(response.error_code, 0);
    assert_eq!(listed(&response), ADVERTISED);
}

#[tokio::test]
async fn api_versions_v0_to_v4_answer_with_a_v0_header_and_the_advertised_list() {
    let (server, _) = delay_server(WireConfig::default()).await;
    let mut stream = server.connect().await;
    for version in 0..=4i16 {
        let correlation_id = 1000 + version as i32;
        write_frame(
            &mut stream,
            &encode_request(version, correlation_id, &api_versions_request(version)),
        )
        .await;
        let mut frame = expect_frame(&mut stream).await;
        // Response header v0 is the correlation id alone, whatever the request version (the
        // client cannot know yet whether the broker speaks flexible headers).
        assert!(frame.len() >= 4);
        let got = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
        assert_eq!(got, correlation_id, "v{version}: correlation id");
        let _ = frame.split_to(4);
        let body = ApiVersionsResponse::decode(&mut frame, version)
            .unwrap_or_else(|e| panic!("v{version}: body after a v0 header does not decode: {e}"));
        assert!(
            frame.is_empty(),
            "v{version}: {} bytes left after the body",
            frame.len()
        );
        assert_eq!(body.error_code, 0, "v{version}: error code");
        assert_eq!(listed(&body), ADVERTISED, "v{version}: advertised APIs");
    }
    server.stop().await;
}

#[tokio::test]
async fn api_versions_of_an_unsupported_version_get_error_35_in_a_v0_body() {
    let (server, _) = delay_server(WireConfig::default()).await;
    let mut stream = server.connect().await;
    for (i, version) in [127i16, 5, i16::MAX].into_iter().enumerate() {
        let correlation_id = 77 + i as i32;
        // A header and body of a format this server cannot know: it must answer from the first
        // eight bytes alone.
        let mut rest = BytesMut::new();
        rest.put_i16(9);
        rest.put_slice(b"future-ok");
        rest.put_slice(&[0x00, 0x07, 0xde, 0xad, 0xbe, 0xef, 0x01]);
        write_frame(
            &mut stream,
            &raw_request(18, version, correlation_id, &rest),
        )
        .await;
        let frame = expect_frame(&mut stream).await;
        let (got, body) = decode_response::<ApiVersionsRequest>(0, frame);
        assert_eq!(got, correlation_id);
        assert_eq!(body.error_code, 35, "v{version}: UNSUPPORTED_VERSION");
        assert_eq!(listed(&body), ADVERTISED, "v{version}: advertised APIs");
    }
    // The connection stays usable so the client can downgrade.
    let response = call(&mut stream, 3, 90, &api_versions_request(3)).await;
    assert_eq!(response.error_code, 0);
    server.stop().await;
}

#[tokio::test]
async fn metadata_response_headers_follow_the_request_version() {
    let (server, _) = delay_server(WireConfig::default()).await;
    let mut stream = server.connect().await;
    // v0-8 answer with response header v0, v9+ (flexible) with v1; `call` decodes with the
    // protocol's header version and requires the body to use the frame up exactly.
    for version in [0i16, 1, 4, 8, 9, 10, 12] {
        let request = delayed_metadata(version as usize, 0);
        let response = call(&mut stream, version, 500 + version as i32, &request).await;
        assert_eq!(
            echoed_names(&response),
            vec![format!("req-{version}-delay-0")],
            "v{version}"
        );
    }
    // Pin the difference itself: a v9 answer has the empty tagged-field byte after the
    // correlation id, a v8 answer goes straight on with throttle_time_ms.
    for (version, header_len) in [(8i16, 4usize), (9, 5)] {
        write_frame(
            &mut stream,
            &encode_request(version, 600, &delayed_metadata(1, 0)),
        )
        .await;
        let frame = expect_frame(&mut stream).await;
        let mut body = frame.slice(header_len..);
        let decoded = kafka_protocol::messages::MetadataResponse::decode(&mut body, version)
            .unwrap_or_else(|e| panic!("v{version} body after a {header_len}-byte header: {e}"));
        assert!(body.is_empty(), "v{version}");
        assert_eq!(echoed_names(&decoded), vec!["req-1-delay-0".to_string()]);
        if header_len == 5 {
            assert_eq!(frame[4], 0, "empty tagged fields of response header v1");
        }
    }
    server.stop().await;
}

/// A small deterministic generator (the test must not depend on a seed-less RNG).
fn jitter(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed % 15
}

#[tokio::test]
async fn pipelined_requests_are_answered_strictly_in_request_order() {
    let (server, counters) = delay_server(WireConfig::default()).await;
    let mut stream = server.connect().await;
    const N: usize = 50;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut all = BytesMut::new();
    let mut expected = Vec::new();
    for i in 0..N {
        // Later requests finish first: decreasing delays plus jitter.
        let delay = (N - i) as u64 * 4 + jitter(&mut seed);
        let request = delayed_metadata(i, delay);
        let frame = encode_request(4, i as i32, &request);
        all.put_u32(frame.len() as u32);
        all.put_slice(&frame);
        expected.push(format!("req-{i}-delay-{delay}"));
    }
    // Back to back, in one write.
    write_all(&mut stream, &all).await;
    for (i, name) in expected.iter().enumerate() {
        let frame = expect_frame(&mut stream).await;
        let (correlation_id, response) = decode_response::<MetadataRequest>(4, frame);
        assert_eq!(correlation_id, i as i32, "response #{i} out of order");
        assert_eq!(
            echoed_names(&response),
            vec![name.clone()],
            "response #{i} body"
        );
    }
    assert_eq!(counters.finished.load(Ordering::SeqCst), N);
    // The order above was enforced, not incidental: the handler answered many at once.
    assert!(
        counters.max_in_flight.load(Ordering::SeqCst) > 10,
        "requests were not handled concurrently (max {} at once)",
        counters.max_in_flight.load(Ordering::SeqCst)
    );
    server.stop().await;
}

#[tokio::test]
async fn requests_read_ahead_per_connection_are_bounded() {
    let (server, counters) = delay_server(WireConfig {
        max_inflight_per_connection: 4,
        ..WireConfig::default()
    })
    .await;
    let mut stream = server.connect().await;
    let mut all = BytesMut::new();
    for i in 0..20 {
        let frame = encode_request(1, i, &delayed_metadata(i as usize, 30));
        all.put_u32(frame.len() as u32);
        all.put_slice(&frame);
    }
    write_all(&mut stream, &all).await;
    for i in 0..20 {
        let (correlation_id, _) =
            decode_response::<MetadataRequest>(1, expect_frame(&mut stream).await);
        assert_eq!(correlation_id, i);
    }
    let max = counters.max_in_flight.load(Ordering::SeqCst);
    assert!(
        (2..=4).contains(&max),
        "at most 4 requests may be in flight on one connection, saw {max}"
    );
    server.stop().await;
}

#[tokio::test]
async fn an_oversized_frame_closes_only_its_connection() {
    const MAX: usize = 1024;
    let (server, _) = delay_server(WireConfig {
        max_frame_bytes: MAX,
        ..WireConfig::default()
    })
    .await;
    let mut healthy = server.connect().await;
    assert_serves_api_versions(&mut healthy, 1).await;

    // One byte over the limit: closed before any body is read or allocated.
    let mut over = server.connect().await;
    write_all(&mut over, &((MAX + 1) as u32).to_be_bytes()).await;
    expect_closed(&mut over, "frame of max_frame_bytes + 1").await;

    // A length of 4 GiB - 1 with no body: closed, nothing allocated, server alive.
    let mut huge = server.connect().await;
    write_all(&mut huge, &u32::MAX.to_be_bytes()).await;
    expect_closed(&mut huge, "frame of 4 GiB").await;

    // The connection opened before still works.
    assert_serves_api_versions(&mut healthy, 2).await;

    // Exactly the limit is accepted (ApiVersions v0 ignores trailing bytes).
    let mut exact = server.connect().await;
    let mut frame = BytesMut::from(&encode_request(0, 3, &api_versions_request(0))[..]);
    frame.resize(MAX, 0xab);
    write_frame(&mut exact, &frame).await;
    let (correlation_id, body) =
        decode_response::<ApiVersionsRequest>(0, expect_frame(&mut exact).await);
    assert_eq!(correlation_id, 3);
    assert_eq!(body.error_code, 0);
    server.stop().await;
}

#[tokio::test]
async fn a_truncated_frame_then_eof_closes_cleanly() {
    let (server, _) = delay_server(WireConfig::default()).await;
    let mut stream = server.connect().await;
    let frame = encode_request(1, 5, &delayed_metadata(0, 0));
    let mut partial = BytesMut::new();
    partial.put_u32(frame.len() as u32);
    partial.put_slice(&frame[..frame.len() / 2]);
    write_all(&mut stream, &partial).await;
    stream.shutdown().await.expect("half-close");
    match read_frame(&mut stream).await {
        Read::Closed {
            partial: 0,
            reset: false,
        } => {}
        other => panic!("expected an orderly close without a response, got {other:?}"),
    }
    // A truncated length prefix alone, too.
    let mut stream = server.connect().await;
    write_all(&mut stream, &[0, 0]).await;
    stream.shutdown().await.expect("half-close");
    expect_closed(&mut stream, "two bytes then EOF").await;

    let mut fresh = server.connect().await;
    assert_serves_api_versions(&mut fresh, 1).await;
    server.stop().await;
}

#[tokio::test]
async fn an_unknown_api_key_closes_the_connection() {
    let (server, _) = delay_server(WireConfig::default()).await;
    for key in [999i16, -1, i16::MAX, 10_000] {
        let mut stream = server.connect().await;
        write_frame(&mut stream, &raw_request(key, 0, 1, &[0xff, 0xff])).await;
        expect_closed(&mut stream, &format!("api key {key}")).await;
    }
    let mut fresh = server.connect().await;
    assert_serves_api_versions(&mut fresh, 1).await;
    server.stop().await;
}

#[tokio::test]
async fn an_unsupported_version_or_unserved_api_closes_the_connection() {
    let (server, _) = delay_server(WireConfig::default()).await;
    // Metadata v13 exists in the protocol but this handler advertises 0-12.
    let mut stream = server.connect().await;
    write_frame(&mut stream, &encode_request(13, 1, &delayed_metadata(0, 0))).await;
    expect_closed(&mut stream, "Metadata v13").await;
    // Negative version.
    let mut stream = server.connect().await;
    write_frame(&mut stream, &raw_request(3, -1, 1, &[0xff, 0xff])).await;
    expect_closed(&mut stream, "Metadata v-1").await;
    // A real API (Produce) that the handler does not serve at all.
    let mut stream = server.connect().await;
    let produce = kafka_protocol::messages::ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(1000);
    write_frame(&mut stream, &encode_request(3, 1, &produce)).await;
    expect_closed(&mut stream, "Produce on a Metadata-only server").await;

    let mut fresh = server.connect().await;
    assert_serves_api_versions(&mut fresh, 1).await;
    server.stop().await;
}

#[tokio::test]
async fn a_garbage_body_closes_the_connection() {
    let (server, counters) = delay_server(WireConfig::default()).await;
    let client_id = {
        let mut b = BytesMut::new();
        b.put_i16(4);
        b.put_slice(b"test");
        b.freeze()
    };
    let cases: Vec<(&str, Bytes)> = vec![
        // v1: topics array of 5 with no topics behind it.
        ("array longer than the frame", {
            let mut b = BytesMut::from(&client_id[..]);
            b.put_i32(5);
            raw_request(3, 1, 1, &b)
        }),
        // v4 needs allow_auto_topic_creation after the array.
        ("missing field", {
            let mut b = BytesMut::from(&client_id[..]);
            b.put_i32(0);
            raw_request(3, 4, 1, &b)
        }),
        // v1: a topic name whose length runs past the frame.
        ("string past the end", {
            let mut b = BytesMut::from(&client_id[..]);
            b.put_i32(1);
            b.put_i16(300);
            b.put_slice(b"abc");
            raw_request(3, 1, 1, &b)
        }),
        // v1: a negative array length other than -1.
        ("negative array length", {
            let mut b = BytesMut::from(&client_id[..]);
            b.put_i32(-7);
            raw_request(3, 1, 1, &b)
        }),
        // v9 (flexible): header client id length runs past the frame.
        ("bad header", raw_request(3, 9, 1, &[0x7f, 0xff, b'x'])),
        // Shorter than a request header.
        ("seven bytes", Bytes::from_static(&[0, 3, 0, 1, 0, 0, 0])),
        ("empty frame", Bytes::new()),
    ];
    for (what, frame) in cases {
        let mut stream = server.connect().await;
        write_frame(&mut stream, &frame).await;
        expect_closed(&mut stream, what).await;
    }
    assert_eq!(
        counters.started.load(Ordering::SeqCst),
        0,
        "no malformed request may reach the handler"
    );
    let mut fresh = server.connect().await;
    assert_serves_api_versions(&mut fresh, 1).await;
    server.stop().await;
}

#[tokio::test]
async fn requests_before_a_bad_one_are_still_answered_then_the_connection_closes() {
    let (server, _) = delay_server(WireConfig::default()).await;
    let mut stream = server.connect().await;
    let mut all = BytesMut::new();
    for frame in [
        encode_request(1, 1, &delayed_metadata(1, 150)),
        encode_request(1, 2, &delayed_metadata(2, 10)),
        raw_request(999, 0, 3, &[]),
    ] {
        all.put_u32(frame.len() as u32);
        all.put_slice(&frame);
    }
    write_all(&mut stream, &all).await;
    for (correlation_id, name) in [(1, "req-1-delay-150"), (2, "req-2-delay-10")] {
        let (got, response) =
            decode_response::<MetadataRequest>(1, expect_frame(&mut stream).await);
        assert_eq!(got, correlation_id);
        assert_eq!(echoed_names(&response), vec![name.to_string()]);
    }
    expect_closed(&mut stream, "after the unknown api key").await;
    server.stop().await;
}

#[tokio::test]
async fn shutdown_stops_accepting_and_answers_in_flight_requests_before_run_returns() {
    let (server, counters) = delay_server(WireConfig::default()).await;
    let addr = server.addr;
    let mut busy = server.connect().await;
    let mut idle = server.connect().await;
    assert_serves_api_versions(&mut idle, 1).await;

    write_frame(&mut busy, &encode_request(1, 7, &delayed_metadata(7, 600))).await;
    tokio::time::timeout(IO_TIMEOUT, async {
        while counters.started.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the request never reached the handler");

    server.shutdown.cancel();
    // Let the accept loop and the connections observe the cancellation.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !server.task.is_finished(),
        "run() returned while a request was still in flight"
    );

    // An idle connection is closed.
    expect_closed(&mut idle, "idle connection at shutdown").await;
    // A connection made now is not served.
    let late = TcpStream::connect(addr).await;

    // The in-flight request is answered, then the connection closes.
    let (correlation_id, response) =
        decode_response::<MetadataRequest>(1, expect_frame(&mut busy).await);
    assert_eq!(correlation_id, 7);
    assert_eq!(echoed_names(&response), vec!["req-7-delay-600".to_string()]);
    expect_closed(&mut busy, "busy connection after its last answer").await;

    tokio::time::timeout(IO_TIMEOUT, server.task)
        .await
        .expect("run() did not return after draining")
        .expect("server task panicked");
    assert_eq!(counters.started.load(Ordering::SeqCst), 1);

    if let Ok(mut late) = late {
        // The kernel may have queued it in the backlog; nobody ever answers it.
        let mut frame = BytesMut::new();
        let request = encode_request(0, 1, &api_versions_request(0));
        frame.put_u32(request.len() as u32);
        frame.put_slice(&request);
        let _ = late.write_all(&frame).await;
        expect_closed(&mut late, "connection made after shutdown").await;
    }
    assert!(
        tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .is_err(),
        "the listener still accepts after run() returned"
    );
}

#[tokio::test]
async fn many_connections_are_served_concurrently() {
    let (server, counters) = delay_server(WireConfig::default()).await;
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..16 {
        let mut stream = server.connect().await;
        tasks.spawn(async move {
            for i in 0..5 {
                let tag = c * 100 + i;
                let response = call(&mut stream, 1, tag as i32, &delayed_metadata(tag, 20)).await;
                assert_eq!(echoed_names(&response), vec![format!("req-{tag}-delay-20")]);
            }
        });
    }
    tokio::time::timeout(IO_TIMEOUT, async {
        while let Some(r) = tasks.join_next().await {
            r.expect("client task");
        }
    })
    .await
    .expect("clients did not finish");
    assert_eq!(counters.finished.load(Ordering::SeqCst), 80);
    assert!(counters.max_in_flight.load(Ordering::SeqCst) > 1);
    server.stop().await;
}

#[tokio::test]
async fn a_connection_runs_one_fetch_at_a_time_and_answers_all_in_order() {
    use common::FetchDelayHandler;
    use kafka_protocol::messages::FetchRequest;

    let handler = FetchDelayHandler::default();
    let counters = handler.counters.clone();
    let server = TestServer::start(Arc::new(handler), WireConfig::default()).await;
    let mut streams = [server.connect().await, server.connect().await];
    let fetch = FetchRequest::default().with_max_wait_ms(40);
    for stream in streams.iter_mut() {
        let mut all = BytesMut::new();
        for i in 0..6 {
            let frame = encode_request(12, i, &fetch);
            all.put_u32(frame.len() as u32);
            all.put_slice(&frame);
        }
        write_all(stream, &all).await;
    }
    for stream in streams.iter_mut() {
        for i in 0..6 {
            let (correlation_id, _) =
                decode_response::<FetchRequest>(12, expect_frame(stream).await);
            assert_eq!(correlation_id, i);
        }
    }
    // Two connections: at most one fetch each at any time, and both ran side by side.
    assert_eq!(counters.finished.load(Ordering::SeqCst), 12);
    let max = counters.max_in_flight.load(Ordering::SeqCst);
    assert!(
        (1..=2).contains(&max),
        "{max} fetches at once over two connections"
    );
    server.stop().await;
}

#[tokio::test]
async fn an_idle_connection_is_closed_but_one_waiting_for_an_answer_is_not() {
    let (server, _) = delay_server(WireConfig {
        idle_timeout: Duration::from_millis(300),
        ..WireConfig::default()
    })
    .await;
    let mut busy = server.connect().await;
    let mut idle = server.connect().await;
    // Answered after twice the idle timeout: the connection had a request in flight.
    let request = encode_request(1, 7, &delayed_metadata(7, 600));
    write_frame(&mut busy, &request).await;
    let (correlation_id, _) = decode_response::<MetadataRequest>(1, expect_frame(&mut busy).await);
    assert_eq!(correlation_id, 7);
    assert_serves_api_versions(&mut busy, 8).await;
    expect_closed(&mut idle, "a connection that never sent a request").await;
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_its_answers_is_disconnected() {
    let (server, _) = delay_server(WireConfig {
        write_timeout: Duration::from_millis(300),
        ..WireConfig::default()
    })
    .await;
    let stream = server.connect().await;
    let (mut reader, mut writer) = stream.into_split();
    // Requests whose answers echo 4 MiB each; the client writes them and reads nothing.
    let name = "x".repeat(16 * 1024);
    let topics: Vec<_> = (0..256)
        .map(|_| {
            kafka_protocol::messages::metadata_request::MetadataRequestTopic::default().with_name(
                Some(kafka_protocol::messages::TopicName(StrBytes::from_string(
                    name.clone(),
                ))),
            )
        })
        .collect();
    let big = MetadataRequest::default().with_topics(Some(topics));
    let writing = tokio::spawn(async move {
        for i in 0..32 {
            let frame = encode_request(1, i, &big);
            let mut buf = BytesMut::new();
            buf.put_u32(frame.len() as u32);
            buf.put_slice(&frame);
            writer.write_all(&buf).await?;
        }
        Ok::<_, std::io::Error>(())
    });
    // The server stops reading while it cannot write, then gives up and closes: the client's
    // writes fail.
    let written = tokio::time::timeout(IO_TIMEOUT, writing)
        .await
        .expect("the server neither read on nor closed the connection")
        .expect("writer task");
    assert!(
        written.is_err(),
        "128 MiB of answers cannot all have been written unread"
    );
    // What did arrive is whole frames (or a cut one), then the close.
    let mut frames = 0;
    loop {
        let mut len = [0u8; 4];
        match tokio::time::timeout(
            IO_TIMEOUT,
            tokio::io::AsyncReadExt::read_exact(&mut reader, &mut len),
        )
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => break,
            Err(_) => panic!("neither data nor a close"),
        }
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        if tokio::time::timeout(
            IO_TIMEOUT,
            tokio::io::AsyncReadExt::read_exact(&mut reader, &mut body),
        )
        .await
        .expect("neither data nor a close")
        .is_err()
        {
            break;
        }
        frames += 1;
    }
    assert!(
        frames < 32,
        "all {frames} answers arrived although the client stalled"
    );
    server.stop().await;
}
