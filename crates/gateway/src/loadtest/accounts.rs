//! Who the simulated participants log in as: the rows of a credential sheet
//! (the CSV `comfyume users import` writes), or fresh accounts the load
//! test asks a running gateway's admin API for.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

/// One login. Deliberately not `Debug`: it holds a password.
#[derive(Clone)]
pub struct Account {
    pub user: String,
    pub password: String,
}

/// The participant accounts of a credential sheet, in its order. Rows whose
/// role is `admin` are left out: an instructor's jobs take their own lane,
/// so they would not measure what participants get.
pub fn read_credentials(path: &Path) -> anyhow::Result<Vec<Account>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the credential sheet {}", path.display()))?;
    parse_credentials(&text)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("{} is not a credential sheet", path.display()))
}

fn parse_credentials(text: &str) -> Result<Vec<Account>, String> {
    let records = csv_records(text)?;
    let Some((header, rows)) = records.split_first() else {
        return Err("the file is empty".into());
    };
    let column = |name: &str| {
        header
            .iter()
            .position(|h| h.trim().eq_ignore_ascii_case(name))
    };
    let (Some(user), Some(password)) = (column("user"), column("password")) else {
        return Err(format!(
            "its header names no `user` and `password` columns (found: {})",
            header.join(",")
        ));
    };
    let role = column("role");
    let mut accounts = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        // Line numbers as a person counts them, the header being line 1
        // (a quoted field with a line break makes this approximate).
        let line = i + 2;
        let field = |c: usize| {
            row.get(c)
                .ok_or_else(|| format!("row {line} has only {} fields", row.len()))
        };
        if role
            .and_then(|c| row.get(c))
            .is_some_and(|r| r.trim().eq_ignore_ascii_case("admin"))
        {
            continue;
        }
        let name = field(user)?.trim();
        if name.is_empty() {
            return Err(format!("row {line} has no user name"));
        }
        accounts.push(Account {
            user: name.to_string(),
            password: field(password)?.clone(),
        });
    }
    Ok(accounts)
}

/// The records of an RFC 4180 text: fields separated by commas, records by
/// CRLF or LF; a field in double quotes may hold commas, line breaks and
/// doubled quotes. Blank lines are skipped.
fn csv_records(text: &str) -> Result<Vec<Vec<String>>, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = Vec::new();
    let mut record: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    // Whether the current field was quoted: a quoted empty field still
    // counts as a field, so `""` alone on a line is a record.
    let mut quoted = false;
    let end_record = |record: &mut Vec<String>, field: &mut String, quoted: &mut bool| {
        let blank = record.is_empty() && field.is_empty() && !*quoted;
        if !blank {
            record.push(std::mem::take(field));
        }
        *quoted = false;
        (!blank).then(|| std::mem::take(record))
    };
    while let Some(c) = chars.next() {
        match c {
            '"' if field.is_empty() && !quoted => {
                quoted = true;
                loop {
                    match chars.next() {
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            field.push('"');
                        }
                        Some('"') => break,
                        Some(c) => field.push(c),
                        None => return Err("a quoted field is never closed".into()),
                    }
                }
                match chars.peek() {
                    None | Some(',' | '\n' | '\r') => {}
                    Some(c) => {
                        return Err(format!("`{c}` after the closing quote of a field"));
                    }
                }
            }
            ',' => {
                record.push(std::mem::take(&mut field));
                quoted = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' | '\r' => {
                if let Some(r) = end_record(&mut record, &mut field, &mut quoted) {
                    records.push(r);
                }
            }
            c => field.push(c),
        }
    }
    if let Some(r) = end_record(&mut record, &mut field, &mut quoted) {
        records.push(r);
    }
    Ok(records)
}

/// A prefix no earlier run used: `lt`, five random letters and a dash, so
/// the accounts are `ltqzmwk-001`, `ltqzmwk-002`, …
pub fn fresh_prefix() -> String {
    let random = uuid::Uuid::new_v4().as_u128();
    let letters: String = (0..5)
        .map(|i| {
            let n = ((random >> (i * 8)) & 0xff) as u8 % 26;
            char::from(b'a' + n)
        })
        .collect();
    format!("lt{letters}-")
}

#[derive(Deserialize)]
struct Created {
    accounts: Vec<CreatedAccount>,
}

#[derive(Deserialize)]
struct CreatedAccount {
    user: String,
    password: String,
}

/// Creates `count` participant accounts named `<prefix>001`… through
/// `POST /admin/api/users`.
pub async fn create_accounts(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    prefix: &str,
    count: u32,
    bound: Duration,
) -> anyhow::Result<Vec<Account>> {
    let url = format!("{base}/admin/api/users");
    let response = http
        .post(&url)
        .bearer_auth(token)
        .timeout(bound)
        .json(&serde_json::json!({"prefix": prefix, "count": count}))
        .send()
        .await
        .with_context(|| format!("cannot reach the gateway at {base}"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    match status.as_u16() {
        201 | 200 => {}
        401 | 403 => bail!("the gateway refused the admin token ({status})"),
        404 | 405 => bail!(
            "the gateway has no account API (POST /admin/api/users answered {status}); create accounts with `comfyume users import` and pass --accounts"
        ),
        409 => bail!("accounts named {prefix}… exist already ({})", reason(&body)),
        _ => bail!(
            "the gateway did not create the accounts: {status} {}",
            reason(&body)
        ),
    }
    let created: Created = serde_json::from_str(&body)
        .context("the gateway's answer to POST /admin/api/users has no `accounts` list")?;
    if created.accounts.len() != count as usize {
        bail!(
            "asked for {count} accounts, the gateway created {}",
            created.accounts.len()
        );
    }
    Ok(created
        .accounts
        .into_iter()
        .map(|a| Account {
            user: a.user,
            password: a.password,
        })
        .collect())
}

/// The `error` of a JSON error body, or the start of the text.
fn reason(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| body.chars().take(200).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users(accounts: &[Account]) -> Vec<(&str, &str)> {
        accounts
            .iter()
            .map(|a| (a.user.as_str(), a.password.as_str()))
            .collect()
    }

    #[test]
    fn reads_the_sheet_users_import_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.csv");
        let rows = [
            ("seat001", "plain-pass-12"),
            ("seat002", "with,comma"),
            ("seat003", "with \"quotes\""),
            ("seat004", "line\nbreak"),
        ]
        .map(|(u, p)| crate::auth::CredentialRow {
            user: u.into(),
            password: p.into(),
            role: "participant".into(),
        });
        crate::auth::write_credentials_csv(&path, &rows, "http://room, 1").unwrap();
        let accounts = read_credentials(&path).unwrap();
        assert_eq!(
            users(&accounts),
            [
                ("seat001", "plain-pass-12"),
                ("seat002", "with,comma"),
                ("seat003", "with \"quotes\""),
                ("seat004", "line\nbreak"),
            ]
        );
    }

    #[test]
    fn parses_rfc_4180_quoting() {
        let text = "\u{feff}user,password,role,url\r\n\
                    a,\"x,\"\"y\"\"\",participant,http://h\r\n\
                    \r\n\
                    b,\"\",participant,\"http://h\"\r\n\
                    boss,p,admin,http://h\n\
                    c,last,participant,http://h";
        let accounts = parse_credentials(text).unwrap();
        assert_eq!(
            users(&accounts),
            [("a", "x,\"y\""), ("b", ""), ("c", "last")]
        );
    }

    #[test]
    fn columns_are_found_by_name() {
        let accounts = parse_credentials("password,user\nsecret,u1\n").unwrap();
        assert_eq!(users(&accounts), [("u1", "secret")]);
    }

    #[test]
    fn refuses_what_is_not_a_sheet() {
        assert!(parse_credentials("").is_err());
        assert!(parse_credentials("name,pw\na,b\n").is_err());
        assert!(parse_credentials("user,password\na,\"open\n").is_err());
        assert!(parse_credentials("user,password\na,\"x\"y\n").is_err());
        assert!(parse_credentials("user,password\na\n").is_err());
    }

    /// The admin API's contract: 201 with the new accounts, 409 when a
    /// name is taken.
    async fn admin_api() -> String {
        use axum::Json;
        use axum::http::{HeaderMap, StatusCode};
        use serde_json::{Value, json};
        let app = axum::Router::new().route(
            "/admin/api/users",
            axum::routing::post(|headers: HeaderMap, Json(body): Json<Value>| async move {
                if headers.get("authorization").is_none_or(|v| v != "Bearer admin-t") {
                    return (StatusCode::UNAUTHORIZED, Json(json!({"error": "no"})));
                }
                let prefix = body["prefix"].as_str().unwrap_or_default();
                if prefix == "taken-" {
                    return (
                        StatusCode::CONFLICT,
                        Json(json!({"error": "user 'taken-001' already exists"})),
                    );
                }
                let accounts: Vec<Value> = (1..=body["count"].as_u64().unwrap_or(0))
                    .map(|i| json!({"user": format!("{prefix}{i:03}"), "password": format!("pw-{i}")}))
                    .collect();
                (StatusCode::CREATED, Json(json!({"accounts": accounts})))
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    #[tokio::test]
    async fn creates_accounts_through_the_admin_api() {
        let base = admin_api().await;
        let http = reqwest::Client::new();
        let bound = Duration::from_secs(30);
        let made = create_accounts(&http, &base, "admin-t", "ltabcde-", 2, bound)
            .await
            .unwrap();
        assert_eq!(
            users(&made),
            [("ltabcde-001", "pw-1"), ("ltabcde-002", "pw-2")]
        );
        let taken = create_accounts(&http, &base, "admin-t", "taken-", 2, bound)
            .await
            .err()
            .unwrap();
        assert!(taken.to_string().contains("taken-001"), "{taken}");
        let refused = create_accounts(&http, &base, "wrong", "x-", 2, bound)
            .await
            .err()
            .unwrap();
        assert!(refused.to_string().contains("token"), "{refused}");
    }

    #[test]
    fn fresh_prefixes_make_valid_names() {
        let prefix = fresh_prefix();
        assert_eq!(prefix.len(), 8);
        assert!(prefix.starts_with("lt") && prefix.ends_with('-'));
        assert!(comfyume_domain::UserName::parse(&format!("{prefix}001")).is_ok());
        assert_ne!(fresh_prefix(), fresh_prefix());
    }
}
