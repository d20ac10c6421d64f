//! Who a request belongs to: user names, ids, roles and passwords.

use std::fmt;
use std::str::FromStr;

/// A login name: 1-64 characters of ASCII letters, digits, `-`, `_` and `.`,
/// starting with a letter or digit. Lower-cased, so `Alice` and `alice` are
/// the same account. The name also names the user's workspace folder, which
/// is why the alphabet is this small.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserNameError {
    #[error("a user name cannot be empty")]
    Empty,
    #[error("a user name is at most 64 characters")]
    TooLong,
    #[error(
        "a user name may only hold letters, digits, '-', '_' and '.', and must start with a letter or digit"
    )]
    BadCharacter,
}

impl UserName {
    pub fn parse(raw: &str) -> Result<Self, UserNameError> {
        let s = raw.trim();
        if s.is_empty() {
            return Err(UserNameError::Empty);
        }
        if s.len() > 64 {
            return Err(UserNameError::TooLong);
        }
        let first_ok = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
        let rest_ok = s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !first_ok || !rest_ok {
            return Err(UserNameError::BadCharacter);
        }
        Ok(Self(s.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserName({})", self.0)
    }
}

/// The database id of a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(pub i64);

/// What a user may do: participants use their own workspace; admins also
/// steer the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Participant,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Participant => "participant",
            Role::Admin => "admin",
        }
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "participant" => Ok(Role::Participant),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role '{other}' (expected participant or admin)"
            )),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A plain-text password on its way to being hashed or checked. `Debug`
/// never shows it.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    pub fn new(raw: impl Into<String>) -> Self {
        Self(raw.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names() {
        assert_eq!(UserName::parse(" Alice ").unwrap().as_str(), "alice");
        assert_eq!(UserName::parse("user001").unwrap().as_str(), "user001");
        assert_eq!(UserName::parse(""), Err(UserNameError::Empty));
        assert_eq!(UserName::parse("../x"), Err(UserNameError::BadCharacter));
        assert_eq!(UserName::parse(".hidden"), Err(UserNameError::BadCharacter));
        assert_eq!(UserName::parse("a b"), Err(UserNameError::BadCharacter));
        assert!(UserName::parse(&"a".repeat(65)).is_err());
    }

    #[test]
    fn password_debug_is_redacted() {
        assert!(!format!("{:?}", Password::new("hunter2")).contains("hunter2"));
    }
}
