//! The server side of SCRAM-SHA-256 / SCRAM-SHA-512 (RFC 5802, RFC 7677), as Kafka clients speak
//! it: no channel binding, no SASLprep of the password (Kafka's own server and clients use the
//! UTF-8 bytes as they are), usernames with `,` and `=` escaped as `=2C` / `=3D`.
//!
//! Exchange: client-first (`n,,n=user,r=cnonce`) -> server-first (`r=cnonce+snonce,s=salt,i=n`)
//! -> client-final (`c=biws,r=nonce,p=proof`) -> server-final (`v=signature`).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

/// Kafka's default (and RFC 7677's minimum recommendation).
pub const ITERATIONS: u32 = 4096;
/// Bytes of salt generated per user and mechanism.
pub const SALT_LEN: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScramHash {
    Sha256,
    Sha512,
}

impl ScramHash {
    pub fn mechanism(self) -> &'static str {
        match self {
            ScramHash::Sha256 => "SCRAM-SHA-256",
            ScramHash::Sha512 => "SCRAM-SHA-512",
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
        match self {
            ScramHash::Sha256 => match Hmac::<Sha256>::new_from_slice(key) {
                Ok(mut m) => {
                    m.update(data);
                    m.finalize().into_bytes().to_vec()
                }
                Err(_) => Vec::new(),
            },
            ScramHash::Sha512 => match Hmac::<Sha512>::new_from_slice(key) {
                Ok(mut m) => {
                    m.update(data);
                    m.finalize().into_bytes().to_vec()
                }
                Err(_) => Vec::new(),
            },
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha256 => Sha256::digest(data).to_vec(),
            ScramHash::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    fn len(self) -> usize {
        match self {
            ScramHash::Sha256 => 32,
            ScramHash::Sha512 => 64,
        }
    }

    /// `Hi(password, salt, i)`: PBKDF2 with HMAC of this hash.
    fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0u8; self.len()];
        match self {
            ScramHash::Sha256 => {
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
            }
            ScramHash::Sha512 => {
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
            }
        }
        out
    }
}

/// What the server keeps of a password: enough to check a proof and sign, not to log in.
#[derive(Clone)]
pub struct ScramCredential {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramCredential")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl ScramCredential {
    pub fn derive(hash: ScramHash, password: &[u8], salt: &[u8], iterations: u32) -> Self {
        let salted = hash.salted_password(password, salt, iterations);
        let client_key = hash.hmac(&salted, b"Client Key");
        ScramCredential {
            salt: salt.to_vec(),
            iterations,
            stored_key: hash.hash(&client_key),
            server_key: hash.hmac(&salted, b"Server Key"),
        }
    }

    /// Whether `password` is the one this credential was derived from (constant time in the
    /// comparison; PBKDF2 dominates the cost either way).
    pub fn matches_password(&self, hash: ScramHash, password: &[u8]) -> bool {
        let salted = hash.salted_password(password, &self.salt, self.iterations);
        let stored = hash.hash(&hash.hmac(&salted, b"Client Key"));
        bool::from(stored.ct_eq(&self.stored_key))
    }
}

/// Why an exchange failed. `Malformed` names a protocol error (safe to report); `Credentials`
/// covers an unknown user and a wrong password alike, so a client cannot tell them apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScramFailure {
    Malformed(String),
    Credentials,
}

fn malformed(msg: impl Into<String>) -> ScramFailure {
    ScramFailure::Malformed(msg.into())
}

/// The state the server keeps between the two client messages.
#[derive(Debug)]
pub struct ScramExchange {
    hash: ScramHash,
    username: String,
    /// `None` for an unknown user: the exchange runs on with a stand-in and fails at the proof.
    credential: Option<ScramCredential>,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

/// Decodes a `saslname`: `=2C` is `,`, `=3D` is `=`, any other `=` is an error.
fn decode_saslname(s: &str) -> Result<String, ScramFailure> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(malformed("bad escape in the username (only =2C and =3D)")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A printable nonce (RFC 5802: 0x21..0x7E except `,`).
fn valid_nonce(n: &str) -> bool {
    !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

impl ScramExchange {
    pub fn hash(&self) -> ScramHash {
        self.hash
    }

    /// Handles the client-first message. `credential` looks up the user's credential;
    /// `stand_in` makes one for an unknown user (a stable salt, so probing shows nothing);
    /// `server_nonce` is fresh randomness (printable, without `,`).
    pub fn start(
        hash: ScramHash,
        client_first: &[u8],
        credential: impl FnOnce(&str) -> Option<ScramCredential>,
        stand_in: impl FnOnce(&str) -> ScramCredential,
        server_nonce: &str,
    ) -> Result<(ScramExchange, Vec<u8>), ScramFailure> {
        let msg = std::str::from_utf8(client_first)
            .map_err(|_| malformed("client-first-message is not UTF-8"))?;
        // gs2-header: cbind-flag "," [authzid] ","
        let mut parts = msg.splitn(3, ',');
        let cbind = parts.next().unwrap_or_default();
        let authzid = parts
            .next()
            .ok_or_else(|| malformed("client-first-message has no GS2 header"))?;
        let bare = parts
            .next()
            .ok_or_else(|| malformed("client-first-message has no GS2 header"))?;
        match cbind {
            "n" | "y" => {}
            c if c.starts_with("p=") => {
                return Err(malformed("channel binding is not supported (use n,,)"));
            }
            _ => return Err(malformed("bad GS2 channel-binding flag")),
        }
        let authzid = match authzid {
            "" => None,
            a => Some(decode_saslname(a.strip_prefix("a=").ok_or_else(|| {
                malformed("bad authorization identity in the GS2 header")
            })?)?),
        };
        let gs2_header = msg[..msg.len() - bare.len()].to_string();

        let mut attrs = bare.split(',');
        let user = attrs.next().unwrap_or_default();
        if user.starts_with("m=") {
            return Err(malformed("mandatory SCRAM extensions are not supported"));
        }
        let username = decode_saslname(
            user.strip_prefix("n=")
                .ok_or_else(|| malformed("client-first-message has no username (n=)"))?,
        )?;
        if username.is_empty() {
            return Err(malformed("empty username"));
        }
        let client_nonce = attrs
            .next()
            .and_then(|r| r.strip_prefix("r="))
            .ok_or_else(|| malformed("client-first-message has no nonce (r=)"))?;
        if !valid_nonce(client_nonce) {
            return Err(malformed("the client nonce is empty or not printable"));
        }
        for ext in attrs {
            // Kafka's delegation tokens authenticate through `tokenauth=true`; riverbed has none.
            if ext.starts_with("tokenauth=") {
                return Err(ScramFailure::Credentials);
            }
        }
        if authzid.as_deref().is_some_and(|a| a != username) {
            return Err(malformed(
                "the authorization identity differs from the username",
            ));
        }

        let credential = credential(&username);
        let shown = credential.clone().unwrap_or_else(|| stand_in(&username));
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&shown.salt),
            shown.iterations
        );
        let reply = server_first.clone().into_bytes();
        Ok((
            ScramExchange {
                hash,
                username,
                credential,
                gs2_header,
                client_first_bare: bare.to_string(),
                server_first,
                nonce,
            },
            reply,
        ))
    }

    /// Handles the client-final message: on success the server-final message and the user.
    pub fn finish(self, client_final: &[u8]) -> Result<(Vec<u8>, String), ScramFailure> {
        let msg = std::str::from_utf8(client_final)
            .map_err(|_| malformed("client-final-message is not UTF-8"))?;
        let at = msg
            .rfind(",p=")
            .ok_or_else(|| malformed("client-final-message has no proof (p=)"))?;
        let without_proof = &msg[..at];
        let proof = B64
            .decode(&msg[at + 3..])
            .map_err(|_| malformed("the proof is not base64"))?;
        let mut attrs = without_proof.split(',');
        let binding = attrs
            .next()
            .and_then(|c| c.strip_prefix("c="))
            .ok_or_else(|| malformed("client-final-message has no channel binding (c=)"))?;
        let binding = B64
            .decode(binding)
            .map_err(|_| malformed("the channel binding is not base64"))?;
        if binding != self.gs2_header.as_bytes() {
            return Err(malformed(
                "the channel binding does not repeat the GS2 header",
            ));
        }
        let nonce = attrs
            .next()
            .and_then(|r| r.strip_prefix("r="))
            .ok_or_else(|| malformed("client-final-message has no nonce (r=)"))?;
        if nonce != self.nonce {
            return Err(malformed("the nonce does not match this exchange"));
        }
        if proof.len() != self.hash.len() {
            return Err(malformed("the proof has the wrong length"));
        }
        let Some(cred) = self.credential else {
            return Err(ScramFailure::Credentials);
        };
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let client_signature = self.hash.hmac(&cred.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(p, s)| p ^ s)
            .collect();
        let stored = self.hash.hash(&client_key);
        if !bool::from(stored.ct_eq(&cred.stored_key)) {
            return Err(ScramFailure::Credentials);
        }
        let server_signature = self.hash.hmac(&cred.server_key, auth_message.as_bytes());
        let reply = format!("v={}", B64.encode(server_signature)).into_bytes();
        Ok((reply, self.username))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// RFC 7677 section 3: the SCRAM-SHA-256 example exchange, byte for byte.
    #[test]
    fn rfc7677_example() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let cred = ScramCredential::derive(ScramHash::Sha256, b"pencil", &salt, 4096);
        let (ex, first) = ScramExchange::start(
            ScramHash::Sha256,
            b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            |u| (u == "user").then(|| cred.clone()),
            |_| unreachable!(),
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(first).unwrap(),
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let (last, user) = ex
            .finish(
                b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                  p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            )
            .unwrap();
        assert_eq!(
            String::from_utf8(last).unwrap(),
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        assert_eq!(user, "user");
    }

    #[test]
    fn saslnames_unescape() {
        assert_eq!(decode_saslname("a=2Cb=3Dc").unwrap(), "a,b=c");
        assert!(decode_saslname("a=2").is_err());
        assert!(decode_saslname("a=41").is_err());
    }
}
