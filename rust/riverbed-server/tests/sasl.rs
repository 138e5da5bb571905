//! SASL sessions against a client written here from the RFCs (PLAIN: RFC 4616; SCRAM: RFC 5802
//! section 3 with RFC 7677's hashes), independent of the server's code: right passwords
//! authenticate and the server proves it knows the password; wrong ones, unknown users,
//! replayed and garbled messages fail (never panic); responses encode at every version. And
//! kafka-python's own SCRAM client (a test dependency of the project) against the server.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::{Bytes, BytesMut};
use hmac::{Hmac, Mac};
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use riverbed_server::sasl::{SaslSession, Users, MECHANISMS};
use sha2::{Digest, Sha256, Sha512};

const AUTH_FAILED: i16 = 58;
const ILLEGAL_STATE: i16 = 34;
const UNSUPPORTED: i16 = 33;

fn users() -> Arc<Users> {
    Users::from_passwords([
        ("alice", "wonder land"),
        ("we,ird=name", "p=ss,word"),
        ("bob", "builder"),
    ])
    .expect("users")
}

fn handshake(s: &mut SaslSession, mechanism: &str, version: i16) -> SaslHandshakeResponse {
    let req =
        SaslHandshakeRequest::default().with_mechanism(StrBytes::from_string(mechanism.into()));
    let resp = s.handshake(&req, version);
    for v in 0..=1 {
        let mut buf = BytesMut::new();
        resp.encode(&mut buf, v)
            .expect("handshake response encodes");
    }
    resp
}

fn auth(s: &mut SaslSession, token: &[u8]) -> (SaslAuthenticateResponse, bool) {
    let req = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::copy_from_slice(token));
    let (resp, failed) = s.authenticate(&req, 2);
    for v in 0..=2 {
        let mut buf = BytesMut::new();
        resp.encode(&mut buf, v)
            .expect("authenticate response encodes");
    }
    (resp, failed)
}

// ---- the client side of SCRAM, from RFC 5802 -------------------------------------------------

#[derive(Clone, Copy)]
enum H {
    Sha256,
    Sha512,
}

impl H {
    fn name(self) -> &'static str {
        match self {
            H::Sha256 => "SCRAM-SHA-256",
            H::Sha512 => "SCRAM-SHA-512",
        }
    }
    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            H::Sha256 => {
                let mut m = Hmac::<Sha256>::new_from_slice(key).expect("hmac");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            H::Sha512 => {
                let mut m = Hmac::<Sha512>::new_from_slice(key).expect("hmac");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
        }
    }
    fn h(self, data: &[u8]) -> Vec<u8> {
        match self {
            H::Sha256 => Sha256::digest(data).to_vec(),
            H::Sha512 => Sha512::digest(data).to_vec(),
        }
    }
    /// Hi() of RFC 5802 section 2.2, written out (U1 = HMAC(p, salt || INT(1)), Ui = HMAC(p,
    /// Ui-1), result = U1 xor ... xor Ui) rather than taken from a PBKDF2 crate.
    fn hi(self, password: &[u8], salt: &[u8], i: u32) -> Vec<u8> {
        let mut s = salt.to_vec();
        s.extend_from_slice(&1u32.to_be_bytes());
        let mut u = self.hmac(password, &s);
        let mut out = u.clone();
        for _ in 1..i {
            u = self.hmac(password, &u);
            for (o, x) in out.iter_mut().zip(&u) {
                *o ^= x;
            }
        }
        out
    }
}

struct ScramClient {
    h: H,
    password: String,
    client_first_bare: String,
    nonce: String,
}

fn escape(user: &str) -> String {
    user.replace('=', "=3D").replace(',', "=2C")
}

impl ScramClient {
    fn first(h: H, user: &str, password: &str, nonce: &str) -> (ScramClient, String) {
        let bare = format!("n={},r={nonce}", escape(user));
        let msg = format!("n,,{bare}");
        (
            ScramClient {
                h,
                password: password.into(),
                client_first_bare: bare,
                nonce: nonce.into(),
            },
            msg,
        )
    }

    /// The client-final message and the server signature it expects back.
    fn last(&self, server_first: &str) -> (String, String) {
        let mut r = None;
        let mut s = None;
        let mut i = None;
        for a in server_first.split(',') {
            match a.split_at(2) {
                ("r=", v) => r = Some(v.to_string()),
                ("s=", v) => s = Some(B64.decode(v).expect("salt")),
                ("i=", v) => i = Some(v.parse::<u32>().expect("iterations")),
                _ => {}
            }
        }
        let (r, s, i) = (r.expect("r"), s.expect("s"), i.expect("i"));
        assert!(r.starts_with(&self.nonce) && r.len() > self.nonce.len());
        assert!(i >= 4096, "{i} iterations");
        let salted = self.h.hi(self.password.as_bytes(), &s, i);
        let client_key = self.h.hmac(&salted, b"Client Key");
        let stored_key = self.h.h(&client_key);
        let without_proof = format!("c={},r={r}", B64.encode("n,,"));
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let client_signature = self.h.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&client_signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = self.h.hmac(&salted, b"Server Key");
        let server_signature = self.h.hmac(&server_key, auth_message.as_bytes());
        (
            format!("{without_proof},p={}", B64.encode(proof)),
            format!("v={}", B64.encode(server_signature)),
        )
    }
}

/// Runs a SCRAM exchange; returns the session, the final response and whether it failed.
fn scram(
    users: &Arc<Users>,
    h: H,
    user: &str,
    password: &str,
) -> (SaslSession, SaslAuthenticateResponse, bool, Option<String>) {
    let mut s = SaslSession::new(users.clone());
    let hs = handshake(&mut s, h.name(), 1);
    assert_eq!(hs.error_code, 0);
    let (client, first) = ScramClient::first(h, user, password, "fyko+d2lbbFgONRv9qkxdawL");
    let (r1, failed) = auth(&mut s, first.as_bytes());
    assert!(!failed, "{:?}", r1.error_message);
    assert!(!s.is_authenticated());
    let server_first = String::from_utf8(r1.auth_bytes.to_vec()).expect("utf8");
    let (last, expect_sig) = client.last(&server_first);
    let (r2, failed) = auth(&mut s, last.as_bytes());
    (s, r2, failed, Some(expect_sig))
}

#[test]
fn scram_sha256_and_sha512_authenticate_and_prove_the_server() {
    let users = users();
    for h in [H::Sha256, H::Sha512] {
        for (user, password) in [("alice", "wonder land"), ("we,ird=name", "p=ss,word")] {
            let (s, resp, failed, expect_sig) = scram(&users, h, user, password);
            assert!(!failed, "{}: {:?}", h.name(), resp.error_message);
            assert_eq!(resp.error_code, 0);
            assert_eq!(
                String::from_utf8(resp.auth_bytes.to_vec()).expect("utf8"),
                expect_sig.expect("signature"),
                "{}: server signature",
                h.name()
            );
            assert!(s.is_authenticated());
            assert_eq!(s.principal(), Some(user));
        }
    }
}

#[test]
fn scram_wrong_password_and_unknown_user_fail_alike() {
    let users = users();
    for h in [H::Sha256, H::Sha512] {
        let (mut s, wrong, failed, _) = scram(&users, h, "alice", "wonderland");
        assert!(failed);
        assert_eq!(wrong.error_code, AUTH_FAILED);
        assert!(!s.is_authenticated() && s.principal().is_none());
        let (_, unknown, failed, _) = scram(&users, h, "mallory", "wonder land");
        assert!(failed);
        assert_eq!(unknown.error_code, AUTH_FAILED);
        assert_eq!(wrong.error_message, unknown.error_message);
        // Anything after a failure is refused.
        let (again, failed) = auth(&mut s, b"n,,n=alice,r=abc");
        assert!(failed);
        assert_eq!(again.error_code, ILLEGAL_STATE);
    }
    // An unknown user's salt is stable (as a real user's is), so probing reveals nothing.
    let salt_of = |user: &str| {
        let mut s = SaslSession::new(users.clone());
        handshake(&mut s, "SCRAM-SHA-256", 1);
        let (r, _) = auth(&mut s, format!("n,,n={user},r=abc").as_bytes());
        let text = String::from_utf8(r.auth_bytes.to_vec()).expect("utf8");
        text.split(',').nth(1).expect("salt").to_string()
    };
    assert_eq!(salt_of("mallory"), salt_of("mallory"));
    assert_eq!(salt_of("alice"), salt_of("alice"));
    assert_ne!(salt_of("mallory"), salt_of("alice"));
}

#[test]
fn scram_replays_fail() {
    let users = users();
    // A client-final recorded from one session, replayed in another: its nonce is stale.
    let mut s1 = SaslSession::new(users.clone());
    handshake(&mut s1, "SCRAM-SHA-256", 1);
    let (client, first) = ScramClient::first(H::Sha256, "alice", "wonder land", "nonce1");
    let (r1, _) = auth(&mut s1, first.as_bytes());
    let (last, _) = client.last(std::str::from_utf8(&r1.auth_bytes).expect("utf8"));
    let (ok, failed) = auth(&mut s1, last.as_bytes());
    assert!(!failed && ok.error_code == 0);
    // Replaying the final message on the authenticated session is refused too.
    let (r, failed) = auth(&mut s1, last.as_bytes());
    assert!(failed && r.error_code == ILLEGAL_STATE);

    let mut s2 = SaslSession::new(users.clone());
    handshake(&mut s2, "SCRAM-SHA-256", 1);
    let (r, failed) = auth(&mut s2, first.as_bytes());
    assert!(!failed && r.error_code == 0);
    let (r, failed) = auth(&mut s2, last.as_bytes());
    assert!(failed, "a replayed client-final authenticated");
    assert_eq!(r.error_code, AUTH_FAILED);
    assert!(!s2.is_authenticated());

    // The client-first sent twice: the second is no client-final.
    let mut s3 = SaslSession::new(users.clone());
    handshake(&mut s3, "SCRAM-SHA-512", 1);
    auth(&mut s3, first.as_bytes());
    let (r, failed) = auth(&mut s3, first.as_bytes());
    assert!(failed && r.error_code == AUTH_FAILED && !s3.is_authenticated());
}

#[test]
fn scram_tampered_final_messages_fail() {
    let users = users();
    let setup = || {
        let mut s = SaslSession::new(users.clone());
        handshake(&mut s, "SCRAM-SHA-256", 1);
        let (client, first) = ScramClient::first(H::Sha256, "alice", "wonder land", "n0nce");
        let (r1, _) = auth(&mut s, first.as_bytes());
        let (last, _) = client.last(std::str::from_utf8(&r1.auth_bytes).expect("utf8"));
        (s, last)
    };
    let (_, good) = setup();
    let at = good.rfind(",p=").expect("proof");
    let mut proof = B64.decode(&good[at + 3..]).expect("b64");
    proof[0] ^= 1;
    let tampered = [
        format!("{},p={}", &good[..at], B64.encode(&proof)),
        good.replacen("c=biws", "c=eSws", 1), // claims channel-binding support
        good.replacen(",r=", ",r=x", 1),
        good[..at].to_string(),
        format!("{},p=!!notbase64", &good[..at]),
        format!("{},p={}", &good[..at], B64.encode(&proof[..16])),
    ];
    for t in tampered {
        let (mut s, _) = setup();
        let (r, failed) = auth(&mut s, t.as_bytes());
        assert!(failed, "{t}");
        assert_eq!(r.error_code, AUTH_FAILED, "{t}");
        assert!(!s.is_authenticated());
    }
    let (mut s, good) = setup();
    assert!(
        !auth(&mut s, good.as_bytes()).1,
        "the untampered message works"
    );
}

#[test]
fn garbled_tokens_fail_without_panic() {
    let users = users();
    let mut tokens: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"\xff\xfe".to_vec(),
        b"n,".to_vec(),
        b"p=tls-unique,,n=alice,r=abc".to_vec(),
        b"n,,m=ext,n=alice,r=abc".to_vec(),
        b"n,,n=al=ice,r=abc".to_vec(),
        b"n,,n=,r=abc".to_vec(),
        b"n,,n=alice,r=".to_vec(),
        b"n,,n=alice".to_vec(),
        b"n,a=bob,n=alice,r=abc".to_vec(),
        b"n,,n=alice,r=abc,tokenauth=true".to_vec(),
        b"\0\0".to_vec(),
        b"alice\0wonder land".to_vec(),
        b"x\0alice\0wonder land".to_vec(),
        b"\0alice\0wonder land\0".to_vec(),
    ];
    // And pseudo-random bytes (xorshift; fixed seed).
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for n in 0..300 {
        let len = n % 97;
        tokens.push(
            (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 24) as u8
                })
                .collect(),
        );
    }
    for mechanism in MECHANISMS {
        for t in &tokens {
            let mut s = SaslSession::new(users.clone());
            handshake(&mut s, mechanism, 1);
            let (r, failed) = auth(&mut s, t);
            if !failed {
                // Only a well-formed SCRAM client-first may go on; never authenticated yet.
                assert!(mechanism.starts_with("SCRAM"), "{mechanism} {t:?}");
                assert!(!s.is_authenticated());
                let (r2, failed) = auth(&mut s, t);
                assert!(failed && r2.error_code == AUTH_FAILED);
            } else {
                assert!(
                    r.error_code == AUTH_FAILED,
                    "{mechanism} {t:?}: {}",
                    r.error_code
                );
            }
            assert!(!s.is_authenticated(), "{mechanism} {t:?}");
        }
    }
}

#[test]
fn plain_checks_the_password() {
    let users = users();
    let run = |token: &[u8]| {
        let mut s = SaslSession::new(users.clone());
        assert_eq!(handshake(&mut s, "PLAIN", 1).error_code, 0);
        let (r, failed) = auth(&mut s, token);
        (s, r, failed)
    };
    let (s, r, failed) = run(b"\0alice\0wonder land");
    assert!(!failed && r.error_code == 0 && r.auth_bytes.is_empty());
    assert_eq!(s.principal(), Some("alice"));
    let (s, _, failed) = run(b"alice\0alice\0wonder land");
    assert!(!failed && s.is_authenticated());
    let (s, _, failed) = run(b"\0we,ird=name\0p=ss,word");
    assert!(!failed && s.principal() == Some("we,ird=name"));

    for bad in [
        &b"\0alice\0wonderland"[..],
        b"\0alice\0wonder land ",
        b"\0mallory\0wonder land",
        b"\0bob\0wonder land",
        b"bob\0alice\0wonder land",
    ] {
        let (s, r, failed) = run(bad);
        assert!(failed, "{bad:?}");
        assert_eq!(r.error_code, AUTH_FAILED);
        assert!(!s.is_authenticated());
    }
    let (_, wrong, _) = run(b"\0alice\0nope");
    let (_, unknown, _) = run(b"\0mallory\0nope");
    assert_eq!(wrong.error_message, unknown.error_message);
}

#[test]
fn handshake_states() {
    let users = users();
    let mut s = SaslSession::new(users.clone());
    // Authenticate before a handshake.
    let (r, failed) = auth(&mut s, b"\0alice\0wonder land");
    assert!(failed && r.error_code == ILLEGAL_STATE);

    let mut s = SaslSession::new(users.clone());
    let r = handshake(&mut s, "GSSAPI", 1);
    assert_eq!(r.error_code, UNSUPPORTED);
    let offered: Vec<&str> = r.mechanisms.iter().map(|m| m.as_str()).collect();
    assert_eq!(offered, ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]);
    assert_eq!(
        handshake(&mut s, "scram-sha-256", 1).error_code,
        UNSUPPORTED
    );
    assert_eq!(handshake(&mut s, "SCRAM-SHA-256", 1).error_code, 0);
    assert_eq!(handshake(&mut s, "PLAIN", 1).error_code, ILLEGAL_STATE);
    assert!(!s.uses_raw_tokens());
}

#[test]
fn handshake_v0_then_raw_tokens() {
    let users = users();
    let mut s = SaslSession::new(users.clone());
    assert_eq!(handshake(&mut s, "SCRAM-SHA-512", 0).error_code, 0);
    assert!(s.uses_raw_tokens());
    let (client, first) = ScramClient::first(H::Sha512, "bob", "builder", "rawnonce");
    let server_first = s.raw_token(first.as_bytes()).expect("server-first");
    let (last, sig) = client.last(std::str::from_utf8(&server_first).expect("utf8"));
    let server_final = s.raw_token(last.as_bytes()).expect("server-final");
    assert_eq!(server_final, sig.as_bytes());
    assert_eq!(s.principal(), Some("bob"));
    assert!(!s.uses_raw_tokens());
    assert!(s.raw_token(b"more").is_err());

    // SaslAuthenticate in a v0 exchange is refused.
    let mut s = SaslSession::new(users.clone());
    handshake(&mut s, "PLAIN", 0);
    let (r, failed) = auth(&mut s, b"\0bob\0builder");
    assert!(failed && r.error_code == ILLEGAL_STATE && !s.is_authenticated());
    // A wrong raw PLAIN token fails with a reason to log.
    let mut s = SaslSession::new(users);
    handshake(&mut s, "PLAIN", 0);
    let e = s.raw_token(b"\0bob\0nope").expect_err("wrong password");
    assert!(e.contains("Invalid username or password"), "{e}");
}

// ---- interoperability with kafka-python's SCRAM client (an implementation not written here) ----

const KAFKA_PYTHON_SCRAM: &str = r#"
import sys
try:
    from kafka.net.sasl.scram import ScramClient          # kafka-python 3.x
except ImportError:
    try:
        from kafka.sasl.scram import ScramClient          # 2.1 - 2.x
    except ImportError:
        from kafka.scram import ScramClient               # 2.0
user, password, mechanism = sys.argv[1:4]
c = ScramClient(user, password, mechanism)
print(c.first_message().decode(), flush=True)
c.process_server_first_message(sys.stdin.readline().strip().encode())
print(c.final_message().decode(), flush=True)
c.process_server_final_message(sys.stdin.readline().strip().encode())
print("server verified", flush=True)
"#;

/// Runs kafka-python's ScramClient against a session; `tamper` may change the server-final
/// message. Returns (authenticated, the client's verdict on the server).
fn kafka_python_scram(
    users: &Arc<Users>,
    mechanism: &str,
    user: &str,
    password: &str,
    tamper: bool,
) -> (bool, bool) {
    use std::io::{BufRead, BufReader, Write};
    let python = std::env::var("RIVERBED_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut child = std::process::Command::new(&python)
        .args(["-c", KAFKA_PYTHON_SCRAM, user, password, mechanism])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{python} (kafka-python, a test dependency): {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut next = || {
        lines
            .next()
            .expect("kafka-python (pip install kafka-python) printed nothing")
            .expect("read")
    };

    let mut s = SaslSession::new(users.clone());
    assert_eq!(handshake(&mut s, mechanism, 1).error_code, 0);
    let (r1, failed) = auth(&mut s, next().as_bytes());
    assert!(!failed, "{:?}", r1.error_message);
    writeln!(
        stdin,
        "{}",
        std::str::from_utf8(&r1.auth_bytes).expect("utf8")
    )
    .expect("write");
    let (r2, failed) = auth(&mut s, next().as_bytes());
    if failed {
        let _ = child.kill();
        let _ = child.wait();
        return (false, false);
    }
    let mut last = String::from_utf8(r2.auth_bytes.to_vec()).expect("utf8");
    if tamper {
        // Another valid-looking signature.
        last = format!("v={}", B64.encode([7u8; 32]));
    }
    writeln!(stdin, "{last}").expect("write");
    drop(stdin);
    let verdict = lines.next().and_then(Result::ok).unwrap_or_default();
    let status = child.wait().expect("wait");
    (
        s.is_authenticated(),
        status.success() && verdict == "server verified",
    )
}

#[test]
fn kafka_python_scram_client_interoperates() {
    let users = users();
    for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512"] {
        assert_eq!(
            kafka_python_scram(&users, mechanism, "alice", "wonder land", false),
            (true, true),
            "{mechanism}"
        );
        // Wrong password: the server refuses.
        assert_eq!(
            kafka_python_scram(&users, mechanism, "alice", "wonderland", false),
            (false, false),
            "{mechanism}"
        );
        // A wrong server signature: the client refuses the server (the check above is real).
        assert_eq!(
            kafka_python_scram(&users, mechanism, "bob", "builder", true),
            (true, false),
            "{mechanism}"
        );
    }
}
