//! `comfyume export --out DIR`: at the end of a workshop, every account's
//! take-home zip (their workflows and outputs), one file each, written as
//! it is read. Runs beside a running server or not.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::config::Config;
use crate::disk::Bytes;
use crate::store::Store;
use crate::workspace::Workspaces;
use comfyume_domain::UserName;

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The folder to write `<user>.zip` files into (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Only these accounts (default: every account).
    #[arg(long = "user", value_name = "NAME")]
    users: Vec<String>,
}

pub async fn export(config: Config, args: ExportArgs) -> anyhow::Result<()> {
    // Not an empty database made by a wrong --data-dir, exported as nothing.
    let database_file = crate::backup::database_file(&config)?;
    if !database_file.exists() {
        anyhow::bail!(
            "no database at {}: no accounts to export (is the data directory right?)",
            database_file.display()
        );
    }
    let store = Store::connect_with(
        config.database_url().expose(),
        config.database_max_connections,
    )
    .await
    .context("cannot open the database")?;
    let accounts = store.list_users().await;
    store.close().await;
    let accounts = accounts.context("cannot list the accounts")?;
    let names: Vec<UserName> = if args.users.is_empty() {
        accounts.into_iter().map(|u| u.name).collect()
    } else {
        let mut names = Vec::new();
        for raw in &args.users {
            let name = UserName::parse(raw).map_err(|e| anyhow::anyhow!("{raw}: {e}"))?;
            if !accounts.iter().any(|u| u.name == name) {
                anyhow::bail!("no account named {name}");
            }
            names.push(name);
        }
        names
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut workspaces = Workspaces::new(config.data_dir.join("users"));
    if let Some(store) = crate::buckets::files_bucket(&config.files).map_err(anyhow::Error::msg)? {
        workspaces = workspaces.with_bucket(crate::workspace::Bucket::new(store));
    }
    for name in names {
        let path = args.out.join(format!("{name}.zip"));
        let partial = args.out.join(format!(".{name}.zip.partial"));
        let workspace = workspaces.user(&name);
        let written = {
            let partial = partial.clone();
            tokio::task::spawn_blocking(move || -> std::io::Result<_> {
                let file = std::fs::File::create(&partial)?;
                let mut out = std::io::BufWriter::new(file);
                let summary = workspace.export_zip(&mut out)?;
                let file = out.into_inner().map_err(|e| e.into_error())?;
                file.sync_all()?;
                Ok(summary)
            })
            .await?
        };
        let summary = written.with_context(|| format!("exporting {name}"))?;
        std::fs::rename(&partial, &path)
            .with_context(|| format!("cannot move the export into {}", path.display()))?;
        println!(
            "{}: {} workflows, {} outputs, {}",
            path.display(),
            summary.workflows,
            summary.outputs,
            Bytes(summary.bytes)
        );
    }
    Ok(())
}
