//! Bearer tokens: `v1~<user>~<expires unix seconds>~<hex HMAC-SHA256>`, signed with
//! the host's secret. The command and query hosts verify the same tokens; the
//! acting user comes only from a verified token, never from a request body.

use hmac::{Hmac, Mac};
use hyper::HeaderMap;
use hyper::header::AUTHORIZATION;
use sha2::Sha256;

use domain::{Timestamp, UserId};

type HmacSha256 = Hmac<Sha256>;

const VERSION: &str = "v1";

/// Why a request carries no usable identity. All of them answer 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token: send Authorization: Bearer <token>")]
    Missing,
    #[error("the bearer token is malformed")]
    Malformed,
    #[error("the bearer token's signature does not verify")]
    BadSignature,
    #[error("the bearer token has expired")]
    Expired,
}

/// The secret that signs and verifies tokens.
#[derive(Clone)]
pub struct TokenKey {
    secret: Vec<u8>,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            secret: secret.to_vec(),
        }
    }

    fn mac(&self, signed_part: &str) -> HmacSha256 {
        let mut mac =
            HmacSha256::new_from_slice(&self.secret).expect("HMAC accepts keys of any length");
        mac.update(signed_part.as_bytes());
        mac
    }

    /// A token for `user` valid until `expires_at`.
    pub fn mint(&self, user: &UserId, expires_at: Timestamp) -> String {
        let signed_part = format!(
            "{VERSION}~{user}~{}",
            expires_at.unix_millis().div_euclid(1_000)
        );
        let signature = self.mac(&signed_part).finalize().into_bytes();
        format!("{signed_part}~{}", hex(&signature))
    }

    /// The user a token speaks for, if it is well formed, signed with this key
    /// and not expired at `now`.
    pub fn verify(&self, token: &str, now: Timestamp) -> Result<UserId, AuthError> {
        let (signed_part, signature) = token.rsplit_once('~').ok_or(AuthError::Malformed)?;
        let mut parts = signed_part.split('~');
        let (Some(VERSION), Some(user), Some(expires), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed);
        };
        let signature = unhex(signature).ok_or(AuthError::Malformed)?;
        // `verify_slice` compares in constant time.
        self.mac(signed_part)
            .verify_slice(&signature)
            .map_err(|_| AuthError::BadSignature)?;
        let expires: i64 = expires.parse().map_err(|_| AuthError::Malformed)?;
        if now.unix_millis().div_euclid(1_000) >= expires {
            return Err(AuthError::Expired);
        }
        UserId::parse(user).map_err(|_| AuthError::Malformed)
    }
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer(headers: &HeaderMap) -> Result<&str, AuthError> {
    let value = headers.get(AUTHORIZATION).ok_or(AuthError::Missing)?;
    let value = value.to_str().map_err(|_| AuthError::Malformed)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::Malformed);
    }
    Ok(token.trim())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_unix_millis(seconds * 1_000)
    }

    fn alice() -> UserId {
        UserId::parse("alice.b-c_9").expect("valid user")
    }

    #[test]
    fn a_minted_token_verifies_until_it_expires() {
        let key = TokenKey::new(b"secret");
        let token = key.mint(&alice(), at(1_000));
        assert_eq!(key.verify(&token, at(999)), Ok(alice()));
        assert_eq!(key.verify(&token, at(1_000)), Err(AuthError::Expired));
    }

    #[test]
    fn forged_or_garbled_tokens_are_refused() {
        let key = TokenKey::new(b"secret");
        let token = key.mint(&alice(), at(1_000));
        let other_key = TokenKey::new(b"other").mint(&alice(), at(1_000));
        assert_eq!(key.verify(&other_key, at(0)), Err(AuthError::BadSignature));
        let as_bob = token.replacen("alice.b-c_9", "bob", 1);
        assert_eq!(key.verify(&as_bob, at(0)), Err(AuthError::BadSignature));
        let extended = token.replacen("~1000~", "~9999~", 1);
        assert_eq!(key.verify(&extended, at(0)), Err(AuthError::BadSignature));
        for garbage in [
            "",
            "v1",
            "v1~alice~1000",
            "v2~alice~1000~00",
            "v1~alice~1000~zz",
            "v1~a~b~c~d",
            "é~é~é~é",
        ] {
            assert!(key.verify(garbage, at(0)).is_err(), "{garbage:?}");
        }
    }

    #[test]
    fn bearer_header_is_parsed_strictly() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), Err(AuthError::Missing));
        headers.insert(AUTHORIZATION, "Basic abc".parse().expect("valid header"));
        assert_eq!(bearer(&headers), Err(AuthError::Malformed));
        headers.insert(AUTHORIZATION, "Bearer tok".parse().expect("valid header"));
        assert_eq!(bearer(&headers), Ok("tok"));
    }
}
