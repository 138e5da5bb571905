//! SASL authentication of one connection: SaslHandshake v0..v1 then SaslAuthenticate v0..v2
//! (what modern clients send), with PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512.
//!
//! After a SaslHandshake **v0** a client sends its SASL tokens as raw size-prefixed frames, not
//! as SaslAuthenticate requests; [`SaslSession::uses_raw_tokens`] says so, and
//! [`SaslSession::raw_token`] answers such a frame (its reply is sent size-prefixed as well).
//!
//! Until [`SaslSession::is_authenticated`], the connection should answer only ApiVersions,
//! SaslHandshake and SaslAuthenticate. A failure (`true` from `authenticate`) means: send the
//! response, log, close the connection.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::scram::{ScramExchange, ScramFailure, ScramHash};

pub use crate::sasl_users::Users;

/// The mechanisms offered, in the order SaslHandshake lists them.
pub const MECHANISMS: [&str; 3] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

/// Bytes of random server nonce in SCRAM (base64-encoded on the wire).
const SERVER_NONCE_LEN: usize = 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mechanism {
    Plain,
    Scram(ScramHash),
}

impl Mechanism {
    fn parse(name: &str) -> Option<Mechanism> {
        match name {
            "PLAIN" => Some(Mechanism::Plain),
            "SCRAM-SHA-256" => Some(Mechanism::Scram(ScramHash::Sha256)),
            "SCRAM-SHA-512" => Some(Mechanism::Scram(ScramHash::Sha512)),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Scram(h) => h.mechanism(),
        }
    }
}

#[derive(Debug)]
enum State {
    /// No SaslHandshake yet.
    Start,
    /// Mechanism chosen, no token yet.
    Chosen(Mechanism),
    /// SCRAM: server-first sent, client-final awaited.
    ScramFinal(Box<ScramExchange>),
    Authenticated(String),
    Failed,
}

/// Why a step failed: the Kafka error and a message for the client.
struct Failure {
    error: ResponseError,
    message: String,
}

fn failed_credentials(mechanism: Mechanism) -> Failure {
    // Kafka's wording; the same for an unknown user and a wrong password.
    Failure {
        error: ResponseError::SaslAuthenticationFailed,
        message: format!(
            "Authentication failed during authentication due to invalid credentials with SASL \
             mechanism {}",
            mechanism.name()
        ),
    }
}

fn illegal_state(message: &str) -> Failure {
    Failure {
        error: ResponseError::IllegalSaslState,
        message: message.to_string(),
    }
}

/// The SASL state of one connection.
pub struct SaslSession {
    users: Arc<Users>,
    state: State,
    raw_tokens: bool,
}

impl std::fmt::Debug for SaslSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslSession")
            .field("authenticated", &self.is_authenticated())
            .field("principal", &self.principal())
            .finish_non_exhaustive()
    }
}

impl SaslSession {
    pub fn new(users: Arc<Users>) -> SaslSession {
        SaslSession {
            users,
            state: State::Start,
            raw_tokens: false,
        }
    }

    pub fn is_authenticated(&self) -> bool {
        matches!(self.state, State::Authenticated(_))
    }

    /// The authenticated user.
    pub fn principal(&self) -> Option<&str> {
        match &self.state {
            State::Authenticated(u) => Some(u),
            _ => None,
        }
    }

    /// Whether the next frames are raw SASL tokens (after a SaslHandshake v0), to be answered
    /// by [`raw_token`](Self::raw_token).
    pub fn uses_raw_tokens(&self) -> bool {
        self.raw_tokens && matches!(self.state, State::Chosen(_) | State::ScramFinal(_))
    }

    /// Answers SaslHandshake: the mechanism is chosen if offered (`UnsupportedSaslMechanism`
    /// otherwise, listing the offered ones); a second handshake is `IllegalSaslState`.
    pub fn handshake(&mut self, req: &SaslHandshakeRequest, version: i16) -> SaslHandshakeResponse {
        let mechanisms = MECHANISMS
            .iter()
            .map(|m| StrBytes::from_static_str(m))
            .collect();
        let error = match (&self.state, Mechanism::parse(req.mechanism.as_str())) {
            (State::Start, Some(m)) => {
                self.state = State::Chosen(m);
                self.raw_tokens = version == 0;
                None
            }
            (State::Start, None) => Some(ResponseError::UnsupportedSaslMechanism),
            _ => Some(ResponseError::IllegalSaslState),
        };
        SaslHandshakeResponse::default()
            .with_error_code(error.map_or(0, |e| e.code()))
            .with_mechanisms(mechanisms)
    }

    /// The response to send; `true` = authentication failed: send it, log, close the connection.
    pub fn authenticate(
        &mut self,
        req: &SaslAuthenticateRequest,
        _version: i16,
    ) -> (SaslAuthenticateResponse, bool) {
        if self.raw_tokens {
            let f =
                illegal_state("SaslAuthenticate after a SaslHandshake v0 (raw tokens expected)");
            self.state = State::Failed;
            return (failure_response(f), true);
        }
        match self.step(&req.auth_bytes) {
            Ok(reply) => (
                SaslAuthenticateResponse::default()
                    .with_auth_bytes(reply)
                    .with_session_lifetime_ms(0),
                false,
            ),
            Err(f) => (failure_response(f), true),
        }
    }

    /// Answers one raw token (SASL after a SaslHandshake v0). `Err` carries the reason to log
    /// before closing the connection (v0 has no way to tell the client).
    pub fn raw_token(&mut self, token: &[u8]) -> Result<Bytes, String> {
        if !self.uses_raw_tokens() {
            self.state = State::Failed;
            return Err("a raw SASL token outside a SaslHandshake v0 exchange".into());
        }
        self.step(token).map_err(|f| f.message)
    }

    fn step(&mut self, token: &[u8]) -> Result<Bytes, Failure> {
        let state = std::mem::replace(&mut self.state, State::Failed);
        let (next, reply) = match state {
            State::Start => {
                return Err(illegal_state(
                    "SaslAuthenticate before SaslHandshake chose a mechanism",
                ))
            }
            State::Authenticated(_) => {
                return Err(illegal_state(
                    "already authenticated (re-authentication is not supported)",
                ))
            }
            State::Failed => return Err(illegal_state("authentication already failed")),
            State::Chosen(Mechanism::Plain) => {
                let user = self.plain(token)?;
                (State::Authenticated(user), Bytes::new())
            }
            State::Chosen(m @ Mechanism::Scram(hash)) => {
                let nonce = server_nonce().map_err(|e| Failure {
                    error: ResponseError::SaslAuthenticationFailed,
                    message: e,
                })?;
                let users = &self.users;
                let (exchange, first) = ScramExchange::start(
                    hash,
                    token,
                    |u| users.scram(u, hash),
                    |u| users.stand_in(u, hash),
                    &nonce,
                )
                .map_err(|f| scram_failure(m, f))?;
                (State::ScramFinal(Box::new(exchange)), Bytes::from(first))
            }
            State::ScramFinal(exchange) => {
                let m = Mechanism::Scram(exchange.hash());
                let (last, user) = exchange.finish(token).map_err(|f| scram_failure(m, f))?;
                (State::Authenticated(user), Bytes::from(last))
            }
        };
        self.state = next;
        Ok(reply)
    }

    /// PLAIN (RFC 4616): `[authzid] NUL authcid NUL passwd`.
    fn plain(&self, token: &[u8]) -> Result<String, Failure> {
        let malformed = |why: &str| Failure {
            error: ResponseError::SaslAuthenticationFailed,
            message: format!("Authentication failed: {why}"),
        };
        let text = std::str::from_utf8(token).map_err(|_| malformed("the token is not UTF-8"))?;
        let mut parts = text.split('\0');
        let (Some(authzid), Some(user), Some(password), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed(
                "a PLAIN token is [authzid] NUL username NUL password",
            ));
        };
        if user.is_empty() || password.is_empty() {
            return Err(malformed("empty username or password"));
        }
        if !authzid.is_empty() && authzid != user {
            return Err(malformed("the authorization id differs from the username"));
        }
        if !self.users.check_password(user, password) {
            return Err(Failure {
                error: ResponseError::SaslAuthenticationFailed,
                message: "Authentication failed: Invalid username or password".into(),
            });
        }
        Ok(user.to_string())
    }
}

fn scram_failure(m: Mechanism, f: ScramFailure) -> Failure {
    match f {
        ScramFailure::Credentials => failed_credentials(m),
        ScramFailure::Malformed(why) => Failure {
            error: ResponseError::SaslAuthenticationFailed,
            message: format!(
                "Authentication failed with SASL mechanism {}: {why}",
                m.name()
            ),
        },
    }
}

fn failure_response(f: Failure) -> SaslAuthenticateResponse {
    SaslAuthenticateResponse::default()
        .with_error_code(f.error.code())
        .with_error_message(Some(StrBytes::from_string(f.message)))
}

/// A fresh SCRAM server nonce: random bytes, base64 (printable, no `,`).
fn server_nonce() -> Result<String, String> {
    use base64::Engine;
    let mut b = [0u8; SERVER_NONCE_LEN];
    getrandom::fill(&mut b).map_err(|e| format!("no randomness for the SCRAM nonce: {e}"))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(b))
}
