//! Exchanges end to end: RFC 7677's SCRAM-SHA-256 example, SHA-512 against a small client
//! written from RFC 5802, failures, and PLAIN over the same credentials.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::crypto::{hash, hi, hmac, xor};
use crate::*;

const RFC_SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
const RFC_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";

fn authenticator(credentials: Arc<MemoryCredentials>) -> Authenticator {
    let config = SaslConfig::new(Mechanism::ALL.to_vec()).unwrap();
    Authenticator::new(config, credentials)
        .with_nonce_generator(Arc::new(|| Ok(RFC_SERVER_NONCE.to_string())))
}

fn credentials_of(
    user: &str,
    password: &str,
    mechanisms: &[ScramMechanism],
) -> Arc<MemoryCredentials> {
    let credentials = Arc::new(MemoryCredentials::new());
    for &m in mechanisms {
        let salt = random_salt().unwrap();
        credentials.insert(
            user,
            ScramCredential::from_password(m, password, salt, 4096).unwrap(),
        );
    }
    credentials
}

/// The client side of RFC 5802: the client-final message for `password` and the server
/// signature it expects back.
fn client_final(
    mechanism: ScramMechanism,
    password: &str,
    gs2_header: &str,
    client_first_bare: &str,
    server_first: &str,
) -> (String, String) {
    let attr = |name: &str| {
        server_first
            .split(',')
            .find_map(|a| a.strip_prefix(name))
            .unwrap()
            .to_string()
    };
    let salt = BASE64.decode(attr("s=")).unwrap();
    let iterations: u32 = attr("i=").parse().unwrap();
    let salted = hi(mechanism, password.as_bytes(), &salt, iterations);
    let client_key = hmac(mechanism, &salted, b"Client Key");
    let stored_key = hash(mechanism, &client_key);
    let without_proof = format!("c={},r={}", BASE64.encode(gs2_header), attr("r="));
    let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
    let proof = xor(
        &client_key,
        &hmac(mechanism, &stored_key, auth_message.as_bytes()),
    );
    let server_key = hmac(mechanism, &salted, b"Server Key");
    let signature = hmac(mechanism, &server_key, auth_message.as_bytes());
    (
        format!("{without_proof},p={}", BASE64.encode(proof)),
        format!("v={}", BASE64.encode(signature)),
    )
}

fn text(step: &Step) -> &str {
    std::str::from_utf8(&step.response).unwrap()
}

#[tokio::test]
async fn rfc7677_scram_sha_256_example() {
    let credentials = Arc::new(MemoryCredentials::new());
    let salt = BASE64.decode(RFC_SALT).unwrap();
    let credential =
        ScramCredential::from_password(ScramMechanism::Sha256, "pencil", salt, 4096).unwrap();
    credentials.insert("user", credential);
    let mut session = authenticator(credentials).start("SCRAM-SHA-256").unwrap();

    let first = session
        .step(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
        .await
        .unwrap();
    assert_eq!(
        text(&first),
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    );
    assert_eq!(first.done, None);
    let last = session
        .step(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
        .await
        .unwrap();
    assert_eq!(
        text(&last),
        "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    );
    assert_eq!(last.done.unwrap().to_string(), "User:user");
    assert!(matches!(
        session.step(b"more").await,
        Err(SaslError::ExchangeOver("complete"))
    ));
}

#[tokio::test]
async fn scram_sha_512_round_trip_with_authzid_and_escaped_name() {
    let user = "a,b=c";
    let credentials = credentials_of(user, "s3cret", &[ScramMechanism::Sha512]);
    let mut session = authenticator(credentials).start("SCRAM-SHA-512").unwrap();
    let gs2 = "n,a=a=2Cb=3Dc,";
    let bare = "n=a=2Cb=3Dc,r=clientnonce";
    let first = session
        .step(format!("{gs2}{bare}").as_bytes())
        .await
        .unwrap();
    assert!(text(&first).starts_with("r=clientnonce%hvYD"));
    let (last, expected) = client_final(ScramMechanism::Sha512, "s3cret", gs2, bare, text(&first));
    let done = session.step(last.as_bytes()).await.unwrap();
    assert_eq!(text(&done), expected);
    assert_eq!(done.done.unwrap().user(), user);
}

#[tokio::test]
async fn the_public_client_completes_both_mechanisms() {
    for mechanism in ScramMechanism::ALL {
        let credentials = credentials_of("bob", "pw", &[mechanism]);
        let mut session = authenticator(credentials).start(mechanism.name()).unwrap();
        let mut client = ScramClient::new(mechanism, "bob", "pw", "fyko+d2lbbFgONRv9qkxdawL");
        let first = session
            .step(client.client_first().as_bytes())
            .await
            .unwrap();
        let last = client.client_final(text(&first)).unwrap();
        let done = session.step(last.as_bytes()).await.unwrap();
        client.check_server_final(text(&done)).unwrap();
        assert!(client.check_server_final("v=AAAA").is_err());
        assert_eq!(done.done.unwrap().user(), "bob");
    }
}

#[tokio::test]
async fn wrong_password_fails_at_the_final_step() {
    let credentials = credentials_of("alice", "right", &[ScramMechanism::Sha256]);
    let mut session = authenticator(credentials).start("SCRAM-SHA-256").unwrap();
    let bare = "n=alice,r=abc";
    let first = session.step(format!("n,,{bare}").as_bytes()).await.unwrap();
    let (last, _) = client_final(ScramMechanism::Sha256, "wrong", "n,,", bare, text(&first));
    let failed = session.step(last.as_bytes()).await.unwrap_err();
    assert!(matches!(failed, SaslError::AuthenticationFailed));
    assert_eq!(failed.scram_server_error(), "invalid-proof");
    assert!(matches!(
        session.step(last.as_bytes()).await,
        Err(SaslError::ExchangeOver("failed"))
    ));
}

#[tokio::test]
async fn unknown_user_fails_only_at_the_final_step_with_a_stable_salt() {
    let credentials = credentials_of("alice", "pw", &[ScramMechanism::Sha256]);
    let auth = authenticator(credentials);
    let mut server_firsts = Vec::new();
    for _ in 0..2 {
        let mut session = auth.start("SCRAM-SHA-256").unwrap();
        let bare = "n=mallory,r=abc";
        let first = session.step(format!("n,,{bare}").as_bytes()).await.unwrap();
        let attrs: Vec<&str> = text(&first).split(',').collect();
        assert_eq!(attrs.len(), 3);
        assert_eq!(attrs[2], "i=4096");
        assert_eq!(BASE64.decode(&attrs[1][2..]).unwrap().len(), SALT_LEN);
        let (last, _) = client_final(ScramMechanism::Sha256, "pw", "n,,", bare, text(&first));
        assert!(matches!(
            session.step(last.as_bytes()).await,
            Err(SaslError::AuthenticationFailed)
        ));
        server_firsts.push(text(&first).to_string());
    }
    assert_eq!(server_firsts[0], server_firsts[1]);
}

#[tokio::test]
async fn a_user_without_the_requested_mechanism_is_unknown_to_it() {
    let credentials = credentials_of("alice", "pw", &[ScramMechanism::Sha256]);
    let mut session = authenticator(credentials).start("SCRAM-SHA-512").unwrap();
    let bare = "n=alice,r=abc";
    let first = session.step(format!("n,,{bare}").as_bytes()).await.unwrap();
    let (last, _) = client_final(ScramMechanism::Sha512, "pw", "n,,", bare, text(&first));
    assert!(matches!(
        session.step(last.as_bytes()).await,
        Err(SaslError::AuthenticationFailed)
    ));
}

#[tokio::test]
async fn malformed_messages_fail_the_exchange() {
    let credentials = credentials_of("alice", "pw", &[ScramMechanism::Sha256]);
    let auth = authenticator(credentials);
    for bad_first in [&b""[..], b"n,,", b"p=x,,n=alice,r=a", b"\xff\xfe"] {
        let mut session = auth.start("SCRAM-SHA-256").unwrap();
        assert!(session.step(bad_first).await.is_err());
        assert!(matches!(
            session.step(b"n,,n=alice,r=a").await,
            Err(SaslError::ExchangeOver("failed"))
        ));
    }
    let bare = "n=alice,r=abc";
    for bad_final in [&b""[..], b"c=biws", b"c=biws,r=abc,p=AAAA", b"\0\0\0"] {
        let mut session = auth.start("SCRAM-SHA-256").unwrap();
        session.step(format!("n,,{bare}").as_bytes()).await.unwrap();
        assert!(session.step(bad_final).await.is_err());
    }
}

#[tokio::test]
async fn start_refuses_unknown_and_disabled_mechanisms() {
    let config = SaslConfig::new(vec![Mechanism::Scram(ScramMechanism::Sha512)]).unwrap();
    let auth = Authenticator::new(config, Arc::new(MemoryCredentials::new()));
    assert_eq!(auth.mechanism_names(), ["SCRAM-SHA-512"]);
    for name in ["PLAIN", "SCRAM-SHA-256", "scram-sha-512", "GSSAPI", ""] {
        assert!(matches!(
            auth.start(name),
            Err(SaslError::UnsupportedMechanism(_))
        ));
    }
    assert!(auth.start("SCRAM-SHA-512").is_ok());
}

#[tokio::test]
async fn plain_checks_the_password_against_the_scram_credential() {
    let credentials = credentials_of("alice", "pw", &[ScramMechanism::Sha256]);
    let auth = authenticator(credentials);
    let run = |message: &'static [u8]| {
        let auth = auth.clone();
        async move { auth.start("PLAIN").unwrap().step(message).await }
    };
    let ok = run(b"\0alice\0pw").await.unwrap();
    assert!(ok.response.is_empty());
    assert_eq!(ok.done.unwrap().to_string(), "User:alice");
    assert!(run(b"alice\0alice\0pw").await.unwrap().done.is_some());
    for refused in [&b"\0alice\0wrong"[..], b"\0bob\0pw"] {
        assert!(matches!(
            run(refused).await,
            Err(SaslError::AuthenticationFailed)
        ));
    }
    assert!(matches!(
        run(b"bob\0alice\0pw").await,
        Err(SaslError::AuthzidMismatch)
    ));
    assert!(matches!(
        run(b"alice\0pw").await,
        Err(SaslError::Malformed { .. })
    ));
    let mut session = auth.start("PLAIN").unwrap();
    session.step(b"\0alice\0pw").await.unwrap();
    assert!(session.step(b"\0alice\0pw").await.is_err());
}

/// PLAIN's password check runs on the blocking pool, not on the task of the connection: with
/// the runtime's only blocking thread held busy, an exchange cannot finish its first poll (had
/// it salted the password inline, it would have), and it completes, with the right outcome, once
/// the thread is free.
#[test]
fn plain_salts_the_password_off_the_runtime_thread() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(1)
        .build()
        .unwrap();
    runtime.block_on(async {
        for (message, accepted) in [
            (&b"\0alice\0pw"[..], true),
            (b"\0alice\0wrong", false),
            (b"\0nobody\0pw", false),
        ] {
            let auth = authenticator(credentials_of("alice", "pw", &[ScramMechanism::Sha512]));
            let (release, held) = std::sync::mpsc::channel::<()>();
            let blocker = tokio::task::spawn_blocking(move || held.recv());
            let mut session = auth.start("PLAIN").unwrap();
            let mut exchange = std::pin::pin!(session.step(message));
            let first_poll =
                std::future::poll_fn(|cx| std::task::Poll::Ready(exchange.as_mut().poll(cx))).await;
            assert!(first_poll.is_pending(), "{message:?}");
            release.send(()).unwrap();
            blocker.await.unwrap().unwrap();
            assert_eq!(exchange.await.is_ok(), accepted, "{message:?}");
        }
    });
}

#[test]
fn credentials_refuse_bad_parameters_and_hide_their_keys() {
    let m = ScramMechanism::Sha256;
    for iterations in [0, 4095, 16385, -1, i64::from(u32::MAX) + 1] {
        assert!(matches!(
            ScramCredential::from_salted_password(m, vec![1], iterations, &[1; 32]),
            Err(SaslError::InvalidIterations(i)) if i == iterations
        ));
    }
    assert!(matches!(
        ScramCredential::from_salted_password(m, vec![], 4096, &[1; 32]),
        Err(SaslError::UnacceptableCredential(_))
    ));
    assert!(matches!(
        ScramCredential::from_salted_password(m, vec![1], 4096, &[]),
        Err(SaslError::UnacceptableCredential(_))
    ));
    assert!(matches!(
        ScramCredential::from_parts(m, vec![1], 4096, vec![0; 31], vec![0; 32]),
        Err(SaslError::UnacceptableCredential(_))
    ));
    let salted = hi(m, b"pw", b"salt", 4096);
    let from_salted =
        ScramCredential::from_salted_password(m, b"salt".to_vec(), 4096, &salted).unwrap();
    let from_password = ScramCredential::from_password(m, "pw", b"salt".to_vec(), 4096).unwrap();
    assert_eq!(from_salted, from_password);
    assert!(from_password.verifies_password("pw"));
    assert!(!from_password.verifies_password("pW"));
    let shown = format!("{from_password:?}");
    assert!(!shown.contains("key"), "{shown}");
}

#[test]
fn mechanism_names_and_numbers() {
    for m in ScramMechanism::ALL {
        assert_eq!(ScramMechanism::from_name(m.name()), Some(m));
        assert_eq!(ScramMechanism::from_kafka_type(m.kafka_type()), Some(m));
    }
    assert_eq!(ScramMechanism::from_kafka_type(0), None);
    assert_eq!(ScramMechanism::Sha256.kafka_type(), 1);
    assert_eq!(ScramMechanism::Sha512.kafka_type(), 2);
}
