//! Databases on the test PostgreSQL server that `scripts/test.sh` starts
//! and names in `TEST_POSTGRES_URL`: a new, empty one per gateway (or per
//! group of gateways sharing one).

use sqlx::Connection;

/// Whether the gateways of this run use PostgreSQL rather than SQLite:
/// `TEST_DATABASE=postgres` (scripts/test.sh runs the gateway tests once
/// more that way).
pub fn gateways_on_postgres() -> bool {
    std::env::var("TEST_DATABASE").is_ok_and(|db| db == "postgres")
}

/// The URL of a new, empty database; `None` (said on stderr) without a
/// test server, which under CI is a failure, not a skip.
pub async fn database(test: &str) -> Option<String> {
    let Ok(server) = std::env::var("TEST_POSTGRES_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: TEST_POSTGRES_URL is unset under CI (scripts/test.sh starts the test PostgreSQL)"
        );
        eprintln!(
            "SKIPPED {test}: no PostgreSQL (scripts/test.sh starts one and sets TEST_POSTGRES_URL)"
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
