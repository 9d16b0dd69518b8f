//! `chatlake alerts` (evaluate the `[[alerts]]` rules once: for cron users)
//! and `chatlake notify test` (one test message to each channel).

use std::process::ExitCode;

use super::*;

/// The arguments of `chatlake alerts`.
#[derive(Debug, clap::Args)]
pub struct AlertsArgs {
    /// Pipeline file (TOML) with `[channels.NAME]` and `[[alerts]]`.
    #[arg(long)]
    pub pipeline: PathBuf,
    #[command(flatten)]
    pub wh: WarehouseArg,
}

/// What `chatlake notify` does.
#[derive(Debug, Subcommand)]
pub enum NotifyAction {
    /// Send a test message to each channel of the file (or one) and say
    /// per channel whether it was accepted.
    Test {
        /// Pipeline file (TOML) with `[channels.NAME]`.
        #[arg(long)]
        pipeline: PathBuf,
        /// Only this channel.
        #[arg(long)]
        channel: Option<String>,
        #[command(flatten)]
        wh: WarehouseArg,
    },
}

/// Runs `chatlake alerts`: exit 0 when every rule was evaluated and every
/// notice delivered somewhere, 1 otherwise.
pub async fn execute(args: AlertsArgs) -> Result<ExitCode> {
    let p = Pipeline::load(&args.pipeline)?;
    if p.config.alerts.is_empty() {
        return Err(Error::Usage(format!(
            "alerts: {} has no [[alerts]] rule",
            args.pipeline.display()
        )));
    }
    let wh = existing_warehouse(args.wh.warehouse, Some(&p))?;
    let outcome = crate::notify::alerts::evaluate_locked(&p, &wh, Utc::now()).await?;
    let mut failed = outcome.errors.len();
    for n in &outcome.notices {
        let sent: Vec<&str> = n
            .deliveries
            .iter()
            .filter(|d| d.ok())
            .map(|d| d.channel.as_str())
            .collect();
        if sent.is_empty() {
            failed += 1;
        }
        outln!(
            "{:<9} {} ({}): sent to {}",
            n.status,
            n.rule,
            n.key,
            if sent.is_empty() {
                "no channel (recorded in meta.deliveries; tried again next time)".to_string()
            } else {
                sent.join(", ")
            }
        )?;
    }
    for e in &outcome.errors {
        outln!("error     {e}")?;
    }
    outln!(
        "{} rule(s) evaluated; {} notice(s) sent; {} alert(s) firing",
        p.config.alerts.len(),
        outcome.notices.len(),
        outcome.firing
    )?;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Runs `chatlake notify test`.
pub async fn notify(action: NotifyAction) -> Result<ExitCode> {
    let NotifyAction::Test {
        pipeline,
        channel,
        wh,
    } = action;
    let p = Pipeline::load(&pipeline)?;
    if let Some(c) = &channel {
        if !p.config.channels.contains_key(c) {
            return Err(Error::Usage(format!(
                "notify test: {} has no [channels.{c}]",
                pipeline.display()
            )));
        }
    }
    if p.config.channels.is_empty() {
        return Err(Error::Usage(format!(
            "notify test: {} has no [channels.NAME]",
            pipeline.display()
        )));
    }
    // Recorded in meta.deliveries when the warehouse exists already.
    let wh = existing_warehouse(wh.warehouse, Some(&p)).ok();
    let sent = crate::notify::send_test(&p, wh.as_ref(), channel.as_deref()).await?;
    let failed = print_deliveries(&sent, |d| match d.http_status {
        Some(status) => format!("ok      accepted ({}, HTTP {status})", d.channel_type),
        None => format!("ok      accepted ({})", d.channel_type),
    })?;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// One line per delivery: `ok(d)` for one that worked, FAILED with the
/// reason otherwise. Returns how many failed.
pub(super) fn print_deliveries(
    sent: &[crate::notify::Delivery],
    ok: impl Fn(&crate::notify::Delivery) -> String,
) -> Result<usize> {
    let mut failed = 0;
    for d in sent {
        match &d.error {
            None => outln!("{:<14} {}", d.channel, ok(d))?,
            Some(e) => {
                failed += 1;
                outln!(
                    "{:<14} FAILED  {e} (after {} attempts)",
                    d.channel,
                    d.attempts
                )?;
            }
        }
    }
    Ok(failed)
}
