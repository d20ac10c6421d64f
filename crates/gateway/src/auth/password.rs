//! Argon2id password hashing, off the async threads (each hash costs tens of
//! milliseconds of CPU and some memory). At most one hash per core runs at
//! a time: a flood of logins waits its turn instead of starting a thread
//! and an Argon2 buffer each.

use comfyume_domain::Password;

use std::sync::OnceLock;

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The longest password accepted, in bytes: a passphrase fits; a megabyte
/// sent to make hashing slow does not.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// The right to run one hash: one at a time per core. The turn moves into
/// the hashing thread, so a request abandoned while its hash runs still
/// holds it until the hash ends.
pub struct Turn {
    _permit: OwnedSemaphorePermit,
}

/// Waits for a turn to hash (a login takes it before the last look at its
/// address's limit, so that no more checks pass that look at once than
/// there are turns).
pub async fn turn() -> Turn {
    static HASHING: OnceLock<Arc<Semaphore>> = OnceLock::new();
    let hashing = HASHING.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Arc::new(Semaphore::new(cores))
    });
    Turn {
        _permit: hashing
            .clone()
            .acquire_owned()
            .await
            .expect("the hashing semaphore is never closed"),
    }
}

/// A hash with the same parameters as real ones, verified against when the
/// user does not exist so that the failure takes as long as a real one.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| password_auth::generate_hash("comfyume-no-such-user"))
}

pub async fn hash(password: &Password) -> String {
    let turn = turn().await;
    let password = password.clone();
    tokio::task::spawn_blocking(move || {
        let _turn = turn;
        let hash = password_auth::generate_hash(password.expose());
        crate::allocator::release_freed();
        hash
    })
    .await
    .expect("password hashing task panicked")
}

/// True when `password` matches `stored`; with no stored hash, burns the
/// same time and answers false.
#[cfg(test)]
pub async fn verify(password: &Password, stored: Option<String>) -> bool {
    verify_in_turn(turn().await, password, stored).await.0
}

/// [`verify`] in a turn the caller already holds.
/// Gives the turn back with the answer, so the caller can count a failure
/// before the next check in line takes the turn and looks at the limits.
/// (`None` for the turn: the check itself failed, and its turn went.)
pub async fn verify_in_turn(
    turn: Turn,
    password: &Password,
    stored: Option<String>,
) -> (bool, Option<Turn>) {
    let password = password.clone();
    let checked = tokio::task::spawn_blocking(move || {
        let matched = verify_now(&password, stored.as_deref());
        crate::allocator::release_freed();
        (matched, turn)
    })
    .await;
    match checked {
        Ok((matched, turn)) => (matched, Some(turn)),
        Err(e) => {
            tracing::error!(error = %e, "a password check failed");
            (false, None)
        }
    }
}

fn verify_now(password: &Password, stored: Option<&str>) -> bool {
    match stored {
        Some(hash) => match password_auth::verify_password(password.expose(), hash) {
            Ok(()) => true,
            Err(password_auth::VerifyError::PasswordInvalid) => false,
            Err(e) => {
                // Nobody can log in with it: the operator must reset it.
                tracing::error!(error = %e, "a stored password hash is unreadable");
                false
            }
        },
        None => {
            let _ = password_auth::verify_password(password.expose(), dummy_hash());
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip() {
        let p = Password::new("correct horse");
        let h = hash(&p).await;
        assert!(h.starts_with("$argon2id$"));
        assert!(verify(&p, Some(h.clone())).await);
        assert!(!verify(&Password::new("wrong"), Some(h)).await);
        assert!(!verify(&p, None).await);
    }
}
