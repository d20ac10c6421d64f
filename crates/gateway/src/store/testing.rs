//! Fresh, empty stores for tests, one per test: an SQLite file in a
//! temporary folder, or a new database on the test PostgreSQL server that
//! `scripts/test.sh` starts and names in `TEST_POSTGRES_URL`.

use std::ops::Deref;

use sqlx::Connection;

use super::Store;

/// A store, and what must live as long as it does.
pub struct TestStore {
    pub store: Store,
    /// The URL it was opened with, to open it again (a second gateway).
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

impl Deref for TestStore {
    type Target = Store;
    fn deref(&self) -> &Store {
        &self.store
    }
}

/// A new SQLite database in a file (so its pool has several connections,
/// as in production).
pub async fn sqlite() -> TestStore {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    let store = Store::connect(&url).await.expect("an SQLite store");
    TestStore {
        store,
        url,
        _dir: Some(dir),
    }
}

/// A new, empty database on the test PostgreSQL server; `None` (said on
/// stderr) when there is none, which under CI is a failure, not a skip.
pub async fn postgres(test: &str) -> Option<TestStore> {
    let url = postgres_database(test).await?;
    let store = Store::connect(&url).await.expect("a PostgreSQL store");
    Some(TestStore {
        store,
        url,
        _dir: None,
    })
}

/// The URL of a new, empty database on the test PostgreSQL server.
pub async fn postgres_database(test: &str) -> Option<String> {
    let Ok(server) = std::env::var("TEST_POSTGRES_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: TEST_POSTGRES_URL is unset under CI (scripts/test.sh starts the test PostgreSQL)"
        );
        eprintln!(
            "SKIPPED {test} on PostgreSQL: no test server (scripts/test.sh starts one and sets TEST_POSTGRES_URL)"
        );
        return None;
    };
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&server)
        .await
        .unwrap_or_else(|e| panic!("the test PostgreSQL at {server}: {e}"));
    // The name is ours (t_ and hex digits), not anyone's input.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("a test database");
    admin.close().await.ok();
    let (base, _) = server
        .rsplit_once('/')
        .expect("TEST_POSTGRES_URL ends in /DATABASE");
    Some(format!("{base}/{name}"))
}
