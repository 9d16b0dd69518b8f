//! `chatlake simulator`: the simulated APIs on 127.0.0.1 until interrupted.

use std::process::ExitCode;

use super::*;

/// The arguments of `chatlake simulator`.
#[derive(Debug, clap::Args)]
pub struct SimulatorArgs {
    /// Port to listen on.
    #[arg(long, default_value_t = 8089)]
    pub port: u16,
    /// First day with data (default: 400 days ago).
    #[arg(long)]
    pub from: Option<NaiveDate>,
    /// Last day with data (default: up to now).
    #[arg(long)]
    pub to: Option<NaiveDate>,
    /// Regular Social Intents chats per day.
    #[arg(long, default_value_t = 40)]
    pub chats_per_day: u32,
    /// Social25 conversations per day.
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
    } = args;
    let today = Utc::now().date_naive();
    let first = from.unwrap_or(today - Duration::days(400));
    let mut config = SimConfig::demo(first, to.unwrap_or(today + Duration::days(1)));
    config.socialintents.chats_per_day = chats_per_day;
    config.social25.conversations_per_day = conversations_per_day;
    config.crm.conversations_per_day = crm_conversations_per_day;
    config.social25.now = now;
    if to.is_none() {
        config.socialintents.until = Some(Utc::now());
    }
    let sim = Simulator::start_on(config, port).await?;
    sim.set_faults(crate::simulator::Faults {
        limit_rps,
        latency_ms,
        ..Default::default()
    });
    outln!(
        "simulator serving Social Intents at {}",
        sim.socialintents_url()
    )?;
    outln!(
        "                 and Social25 at {} (token {}, tenant {})",
        sim.social25_url(),
        crate::simulator::social25::DEMO_TOKEN,
        crate::simulator::social25::DEMO_TENANT_ID
    )?;
    outln!(
        "credentials: account_id = {}, api_token = {}",
        crate::simulator::DEMO_ACCOUNT_ID,
        crate::simulator::DEMO_API_TOKEN
    )?;
    tokio::signal::ctrl_c()
        .await
        .map_err(|e| Error::io("waiting for Ctrl-C", e))?;
    Ok(ExitCode::SUCCESS)
}
