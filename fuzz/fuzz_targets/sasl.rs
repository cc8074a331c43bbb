//! The SASL server exchanges (`sasl/`: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) on arbitrary
//! client messages. Input: one byte picking the mechanism (modulo 3: PLAIN, SCRAM-SHA-256,
//! SCRAM-SHA-512), then up to four client messages, each `len: u16 (big-endian), bytes`.
//! The server nonce is fixed and user `user` has password `pencil` for both SCRAM
//! mechanisms (`kafscale_fuzz::sasl_authenticator`), so a recorded exchange (the seeds) replays to success and mutations
//! start from there. Must never panic; only a correct password or proof authenticates, only
//! as `user`, and only at the exchange's last step; a failed or finished exchange stays over;
//! no answer is larger than a bound.

#![no_main]

use std::sync::OnceLock;

use kafscale_fuzz::{runtime, sasl_authenticator};
use kafscale_sasl::{Authenticator, Mechanism};
use libfuzzer_sys::fuzz_target;

/// Messages per exchange at most.
const MAX_MESSAGES: usize = 4;
/// No server message is longer (a server-first repeats the client nonce, under 4 KiB).
const MAX_RESPONSE: usize = 8192;

fn authenticator() -> &'static Authenticator {
    static AUTH: OnceLock<Authenticator> = OnceLock::new();
    AUTH.get_or_init(sasl_authenticator)
}

/// The client messages of an input.
fn messages(mut rest: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while out.len() < MAX_MESSAGES && rest.len() >= 2 {
        let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
        let body = &rest[2..];
        let message = &body[..len.min(body.len())];
        out.push(message);
        rest = &body[message.len()..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let mechanism = Mechanism::ALL[pick as usize % Mechanism::ALL.len()];
    let last_step = match mechanism {
        Mechanism::Plain => 0,
        Mechanism::Scram(_) => 1,
    };
    let mut session = authenticator()
        .start(mechanism.name())
        .expect("every mechanism is enabled");
    runtime().block_on(async {
        let mut over = false;
        for (i, message) in messages(rest).into_iter().enumerate() {
            let result = session.step(message).await;
            if over {
                assert!(result.is_err(), "a finished exchange went on");
                continue;
            }
            match result {
                Ok(step) => {
                    assert!(step.response.len() <= MAX_RESPONSE);
                    if let Some(principal) = step.done {
                        assert_eq!(i, last_step, "authenticated at step {i}");
                        assert_eq!(principal.to_string(), "User:user");
                        if mechanism == Mechanism::Plain {
                            assert!(message.ends_with(b"\0pencil"));
                        }
                        over = true;
                    } else {
                        assert!(i < last_step, "step {i} neither finished nor failed");
                    }
                }
                Err(_) => over = true,
            }
        }
    });
});
