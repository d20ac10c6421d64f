//! Session tokens: 32 random bytes, hex in the cookie, SHA-256 in the
//! database.

use sha2::{Digest, Sha256};

/// A freshly minted session token. Its `Debug` hides the value.
pub struct SessionToken(String);

impl SessionToken {
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the OS random source failed");
        Self(hex(&bytes))
    }

    /// The value to put in the cookie.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What the database stores for this token.
    pub fn hash(&self) -> String {
        Self::hash_of(&self.0)
    }

    pub fn hash_of(token: &str) -> String {
        hex(&Sha256::digest(token.as_bytes()))
    }
}

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionToken(<redacted>)")
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashed() {
        let a = SessionToken::generate();
        let b = SessionToken::generate();
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.expose().len(), 64);
        assert_ne!(a.hash(), a.expose());
        assert_eq!(a.hash(), SessionToken::hash_of(a.expose()));
    }
}
