//! `chatlake simulator`: the simulated APIs on 127.0.0.1 until interrupted.

use std::process::ExitCode;

use super::*;

/// The arguments of `chatlake simulator`.
#[derive(Debug, clap::Args)]
pub struct SimulatorArgs {
    /// Port to listen on.
    #[arg(long, default_value_t = 8089)]
    pub port: u16,
    /// First day with data (default: the demo's, the day before
    /// pipelines/demo.toml's start_date).
    #[arg(long)]
    pub from: Option<NaiveDate>,
    /// Last day with data (default: up to now).
    #[arg(long)]
    pub to: Option<NaiveDate>,
    /// Social Intents chats per day (on average: busy office hours, quiet
    /// nights and weekends).
    #[arg(long, default_value_t = 40)]
    pub chats_per_day: u32,
    /// Social25 conversations per day (on average).
    #[arg(long, default_value_t = 8)]
    pub conversations_per_day: u32,
    /// CRM helpdesk conversations per day.
    #[arg(long, default_value_t = 6)]
    pub crm_conversations_per_day: u32,
    /// Server-side limit per source, requests a second (a token bucket;
    /// beyond it 429 with Retry-After: 1). 0: none.
    #[arg(long, default_value_t = 0.0)]
    pub limit_rps: f64,
    /// Milliseconds before every answer.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// A fixed clock for the Social25 data (RFC 3339), instead of the
    /// wall clock: a large account's listing is then generated once,
    /// not again every second (benchmarks).
    #[arg(long)]
    pub now: Option<chrono::DateTime<Utc>>,
    /// Exactly the given counts each UTC day, spread evenly over the day,
    /// instead of the demo desk's office hours, trend and noise
    /// (benchmarks: the same record count on every run and every day).
    #[arg(long)]
    pub even: bool,
}

pub async fn execute(args: SimulatorArgs) -> Result<ExitCode> {
    let SimulatorArgs {
        port,
        from,
        to,
        chats_per_day,
        conversations_per_day,
        crm_conversations_per_day,
        limit_rps,
        latency_ms,
        now,
        even,
    } = args;
    // Without options: exactly the account `chatlake demo` serves.
    let (mut config, _) = super::demo::demo_account(Utc::now())?;
    let (first, last) = (
        config.socialintents.first_day,
        config.socialintents.last_day,
    );
    let changed = from.is_some_and(|f| f != first)
        || to.is_some_and(|t| t != last)
        || chats_per_day != config.socialintents.chats_per_day
        || conversations_per_day != config.social25.conversations_per_day
        || crm_conversations_per_day != config.crm.conversations_per_day;
    if changed {
        let until = config.socialintents.until.filter(|_| to.is_none());
        config = SimConfig::demo(from.unwrap_or(first), to.unwrap_or(last));
        config.socialintents.chats_per_day = chats_per_day;
        config.social25.conversations_per_day = conversations_per_day;
        config.crm.conversations_per_day = crm_conversations_per_day;
        config = config.with_crm_contacts_for_visitors(20);
        config.socialintents.until = until;
    }
    config.social25.now = now;
    if even {
        config.socialintents.rhythm = None;
        config.social25.rhythm = None;
    }
    let sim = Simulator::start_on(config, port).await?;
    sim.set_faults(crate::simulator::Faults {
        limit_rps,
        latency_ms,
        ..Default::default()
    });
    outln!("simulator serving (base_url of each source):")?;
    for source in crate::simulator::SOURCES {
        outln!("  {:<14} {}", source.name, sim.base_url(source.name))?;
    }
    outln!(
        "credentials: socialintents account_id = {}, api_token = {}; social25 token {}, tenant {}; crm api_key {}",
        crate::simulator::DEMO_ACCOUNT_ID,
        crate::simulator::DEMO_API_TOKEN,
        crate::simulator::social25::DEMO_TOKEN,
        crate::simulator::social25::DEMO_TENANT_ID,
        crate::simulator::crm::DEMO_API_KEY,
    )?;
    tokio::signal::ctrl_c()
        .await
        .map_err(|e| Error::io("waiting for Ctrl-C", e))?;
    Ok(ExitCode::SUCCESS)
}
