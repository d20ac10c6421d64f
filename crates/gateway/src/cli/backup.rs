//! `comfyume backup [list|verify]` and `comfyume restore`: the room's
//! database and files to S3-compatible storage or a folder, and back.
//! Run on the gateway's machine, beside a running server or not (the
//! database snapshot is taken online). Any failure exits non-zero with
//! its reason; a backup is reported only once its manifest verified.

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::backup::{self, BackupId, Destination, Options, Source, Target};
use crate::config::Config;
use crate::disk::{Bytes, DiskGuard};
use crate::store::Store;

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BackupArgs {
    #[command(subcommand)]
    command: Option<BackupCommand>,
    /// The backups' place: s3://BUCKET/PREFIX or file:///PATH (default:
    /// `[backup] to` in the configuration).
    #[arg(long, value_name = "URL", global = true)]
    to: Option<String>,
    /// Read back this percentage of the objects in full after writing
    /// (the rest are checked by size; default: `[backup] verify_percent`).
    #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u8).range(1..=100))]
    verify_percent: Option<u8>,
    /// Print the report as JSON.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum BackupCommand {
    /// The backups in the store, oldest first.
    List,
    /// Check a backup in the store: every object there with its size and
    /// SHA-256 (read back in full). Exits 1 naming each problem.
    Verify {
        /// The backup (default: the newest).
        #[arg(long, value_name = "BACKUP")]
        at: Option<String>,
        /// Read back only this percentage of the objects in full.
        #[arg(long, value_name = "PERCENT", default_value_t = 100, value_parser = clap::value_parser!(u8).range(1..=100))]
        percent: u8,
    },
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The backups' place: s3://BUCKET/PREFIX or file:///PATH (default:
    /// `[backup] to`).
    #[arg(long, value_name = "URL")]
    from: Option<String>,
    /// The backup to restore (default: the newest).
    #[arg(long, value_name = "BACKUP")]
    at: Option<String>,
    /// Write over a data directory that is not empty: the backup's
    /// database and files replace those there; other files stay. Stop the
    /// server first.
    #[arg(long)]
    force: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn open_target(config: &Config, url: Option<String>) -> anyhow::Result<Target> {
    let url = url
        .or_else(|| config.backup.to.clone())
        .ok_or(backup::BackupError::NoDestination)?;
    Ok(Target::open(&url, &config.backup)?)
}

fn parse_at(at: Option<String>) -> anyhow::Result<Option<BackupId>> {
    at.map(|a| BackupId::parse(&a).map_err(anyhow::Error::msg))
        .transpose()
}

pub async fn backup(config: Config, args: BackupArgs) -> anyhow::Result<()> {
    let target = open_target(&config, args.to)?;
    match args.command {
        None => {
            let database_file = backup::database_file(&config)?;
            if !database_file.exists() {
                anyhow::bail!(
                    "no database at {}: nothing to back up (is the data directory right?)",
                    database_file.display()
                );
            }
            let store = Store::connect_with(
                config.database_url().expose(),
                config.database_max_connections,
            )
            .await
            .context("cannot open the database")?;
            let source = Source {
                data_dir: config.data_dir.clone(),
                database_file,
                store: store.clone(),
                disk: DiskGuard::new(&config.data_dir, config.limits.min_free_disk_bytes),
            };
            let mut options = Options::from_config(&config.backup);
            if let Some(p) = args.verify_percent {
                options.verify_percent = p;
            }
            let report = backup::take::take(&source, &target, &options).await;
            store.close().await;
            let report = report?;
            if let Some(bucket) = &config.files.url {
                eprintln!(
                    "note: participants' files are in {bucket}, which backups do not copy (only the database is in this one); keep them with the bucket's own versioning or replication"
                );
            }
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "backup {} written to {} and verified: {} files, {} in all ({} uploaded in {} new objects); {} objects read back in full, {} checked by size; {:.1} s",
                    report.id,
                    target.url(),
                    report.files,
                    Bytes(report.total_bytes),
                    Bytes(report.uploaded_bytes),
                    report.uploaded_objects,
                    report.verified_in_full,
                    report.verified_by_size,
                    report.duration.as_secs_f64(),
                );
                if !report.pruned.is_empty() || report.collected_objects > 0 {
                    println!(
                        "retention: removed {} older backup(s), collected {} object(s)",
                        report.pruned.len(),
                        report.collected_objects
                    );
                }
            }
            Ok(())
        }
        Some(BackupCommand::List) => {
            let listed = backup::restore::list(&target).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&listed)?);
                return Ok(());
            }
            if listed.is_empty() {
                println!("no backups in {}", target.url());
            }
            for b in &listed {
                match &b.problem {
                    None => println!(
                        "{}  {}  {:>6} files  {:>10}  (database {})",
                        b.id,
                        b.id.taken_at().format("%Y-%m-%d %H:%M:%S UTC"),
                        b.files,
                        Bytes(b.bytes).to_string(),
                        Bytes(b.database_bytes)
                    ),
                    Some(problem) => println!("{}  UNREADABLE: {problem}", b.id),
                }
            }
            let broken = listed.iter().filter(|b| b.problem.is_some()).count();
            if broken > 0 {
                anyhow::bail!("{broken} backup(s) cannot be read");
            }
            Ok(())
        }
        Some(BackupCommand::Verify { at, percent }) => {
            let at = parse_at(at)?;
            let report = backup::restore::verify(&target, at.as_ref(), percent).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "backup {} verified: {} objects present with their sizes, {} read back in full with matching SHA-256",
                    report.id, report.objects, report.read_in_full
                );
            }
            Ok(())
        }
    }
}

pub async fn restore(config: Config, args: RestoreArgs) -> anyhow::Result<()> {
    let target = open_target(&config, args.from)?;
    let at = parse_at(args.at)?;
    let dest = Destination {
        data_dir: config.data_dir.clone(),
        database_file: backup::database_file(&config)?,
    };
    let report = backup::restore::restore(&target, at.as_ref(), &dest, args.force).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "restored backup {} into {}: {} files, {}, every one checked against its SHA-256",
            report.id,
            dest.data_dir.display(),
            report.files,
            Bytes(report.bytes)
        );
    }
    Ok(())
}
