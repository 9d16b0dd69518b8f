//! Telling people: the pipeline file's `[channels.NAME]` (where messages
//! go) and `[[alerts]]` (when to send one). After every run, and when
//! `chatlake alerts` runs (cron) or the scheduler's timer fires, the rules
//! are evaluated over the warehouse; what starts firing, keeps firing past
//! its repeat interval, or clears is sent to the rule's channels
//! ([`alerts`]), each delivery retried with backoff and recorded
//! ([`channels`]). Nothing here can fail a run: a delivery that fails is a
//! row of `meta.deliveries`, a warning, and a line in `chatlake runs`.

pub mod alerts;
pub mod channels;
pub mod config;
pub mod report;
pub mod smtp;

pub use alerts::evaluate_and_notify;
pub use channels::{send_test, Delivery};
pub use config::{validate, AlertRule, ChannelConfig};
