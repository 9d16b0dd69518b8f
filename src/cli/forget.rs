//! `chatlake forget`: erase one person (every row linked to the
//! identifiers given) and keep them out of every later run.

use std::process::ExitCode;

use super::*;
use crate::privacy::suppress::IdKind;

/// The arguments of `chatlake forget`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("who").required(true).multiple(true)
    .args(["email", "phone", "visitor_id", "contact_id", "social25_user"])))]
pub struct ForgetArgs {
    /// Pipeline file (TOML); its `[privacy] key` makes the hashes.
    #[arg(long)]
    pub pipeline: PathBuf,
    #[command(flatten)]
    pub wh: WarehouseArg,
    /// An email address of the person (any case; repeatable).
    #[arg(long, value_name = "EMAIL")]
    pub email: Vec<String>,
    /// A phone number of the person (any spacing; repeatable).
    #[arg(long, value_name = "NUMBER")]
    pub phone: Vec<String>,
    /// A Social Intents visitor id (repeatable).
    #[arg(long, value_name = "ID")]
    pub visitor_id: Vec<String>,
    /// A CRM contact id (repeatable).
    #[arg(long, value_name = "ID")]
    pub contact_id: Vec<String>,
    /// A Social25 user id (repeatable).
    #[arg(long = "social25-user", value_name = "ID")]
    pub social25_user: Vec<String>,
    /// Who asked, or a ticket number: kept in meta.erasures.
    #[arg(long, value_name = "TEXT")]
    pub requested_by: Option<String>,
    /// Print what would be erased, table by table, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs `chatlake forget`.
pub async fn execute(args: ForgetArgs) -> Result<ExitCode> {
    let p = Pipeline::load(&args.pipeline)?;
    let wh = existing_warehouse(args.wh.warehouse, Some(&p))?;
    let mut ids: Vec<(IdKind, String)> = Vec::new();
    for (kind, values) in [
        (IdKind::Email, &args.email),
        (IdKind::Phone, &args.phone),
        (IdKind::VisitorId, &args.visitor_id),
        (IdKind::ContactId, &args.contact_id),
        (IdKind::Social25User, &args.social25_user),
    ] {
        for v in values {
            if kind.normalize(v).is_empty() {
                return Err(Error::Usage(format!(
                    "--{}: an empty identifier",
                    kind.as_str().replace('_', "-")
                )));
            }
            ids.push((kind, v.clone()));
        }
    }
    let lock = if args.dry_run {
        None
    } else {
        let id = format!("forget-{}", Utc::now().format("%Y%m%dT%H%M%SZ"));
        Some(
            crate::state::lock::RunLock::acquire(
                &wh,
                &p.config.name,
                &id,
                crate::state::lock::DEFAULT_TTL,
            )
            .await?,
        )
    };
    let outcome =
        crate::privacy::forget::forget(&wh, &p, &ids, args.requested_by.as_deref(), args.dry_run)
            .await;
    if let Some(lock) = lock {
        lock.release().await;
    }
    let o = outcome?;
    // Never the identifiers themselves: they are what is being erased.
    let kinds: Vec<&str> = ids.iter().map(|(k, _)| k.as_str()).collect();
    if let Some(earlier) = &o.finished_earlier {
        outln!("finished the earlier erasure {earlier} first (it had been interrupted)")?;
    }
    outln!(
        "{} {} ({} identifier(s): {}){}",
        if args.dry_run {
            "dry run of"
        } else {
            "erasure"
        },
        o.erasure_id,
        ids.len(),
        kinds.join(", "),
        if o.resumed { ", resumed" } else { "" }
    )?;
    outln!(
        "{} of the person, by table:",
        if args.dry_run {
            "rows that would be removed"
        } else {
            "rows removed"
        }
    )?;
    for t in &o.tables {
        outln!(
            "  {:<34} {:>7} rows in {} file(s)",
            t.table,
            t.rows,
            t.files
        )?;
    }
    let blind: Vec<&String> = o.tables.iter().flat_map(|t| &t.not_searched).collect();
    if !blind.is_empty() {
        outln!(
            "could not search by {} (dropped by the [privacy] policy): rows written since are found by the other identifiers only",
            blind.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        )?;
    }
    if args.dry_run {
        outln!("nothing was changed")?;
    } else {
        outln!(
            "recorded in meta.erasures; {} identifier(s) on the suppression list: later runs drop their records",
            o.suppressed_people
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
