//! `chatlake privacy apply`: the warehouse rewritten under the pipeline's
//! current `[privacy]` policy, without calling any API.

use std::process::ExitCode;

use super::*;

/// What `chatlake privacy` does.
#[derive(Debug, Subcommand)]
pub enum PrivacyAction {
    /// Rewrite every partition already written under the current policy
    /// (after adding `[privacy]` or making it stricter), file by file;
    /// run it again to finish one that was interrupted.
    Apply {
        /// Pipeline file (TOML): its `[privacy]` section is the policy.
        #[arg(long)]
        pipeline: PathBuf,
        #[command(flatten)]
        wh: WarehouseArg,
        /// Print, table by table, how many files would be rewritten; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Runs `chatlake privacy`.
pub async fn execute(action: PrivacyAction) -> Result<ExitCode> {
    let PrivacyAction::Apply {
        pipeline,
        wh,
        dry_run,
    } = action;
    let p = Pipeline::load(&pipeline)?;
    let wh = existing_warehouse(wh.warehouse, Some(&p))?;
    let Some(policy) = p.policy.as_deref() else {
        return Err(Error::Usage(format!(
            "privacy apply: {} has no [privacy] section; add one (see \"Personal data\" in the README)",
            pipeline.display()
        )));
    };
    let name = &p.config.name;
    let lock = if dry_run {
        crate::privacy::check_key_with(&wh, name, Some(policy), false, false).await?;
        None
    } else {
        let id = format!("privacy-apply-{}", Utc::now().format("%Y%m%dT%H%M%SZ"));
        let lock =
            crate::state::lock::RunLock::acquire(&wh, name, &id, crate::state::lock::DEFAULT_TTL)
                .await?;
        // Hashes made with another key would not join: refused as a run would.
        if let Err(e) = crate::privacy::check_key(&wh, name, Some(policy), false).await {
            lock.release().await;
            return Err(e);
        }
        Some(lock)
    };
    let outcome = crate::privacy::apply::apply(&wh, policy, dry_run).await;
    if let Some(lock) = lock {
        lock.release().await;
    }
    let applied = outcome?;
    outln!(
        "{} under the [privacy] policy of {name}, by table:",
        if dry_run {
            "files that would be rewritten"
        } else {
            "files rewritten"
        }
    )?;
    for a in &applied {
        outln!(
            "  {:<34} {:>5} of {:>5} files ({} rows)",
            a.table,
            a.rewritten,
            a.files,
            a.rows
        )?;
    }
    let total: u64 = applied.iter().map(|a| a.rewritten).sum();
    if dry_run {
        outln!("nothing was changed")?;
    } else if total == 0 {
        outln!("every file already follows the policy")?;
    }
    Ok(ExitCode::SUCCESS)
}
