//! chatlake: customer-chat SaaS APIs -> Hive-partitioned Parquet -> DataFusion SQL.
//!
//! The data flow, one module per stage, in the order data moves:
//! [`config`] (pipeline file) -> [`extract`] (HTTP pages: a date window, a
//! snapshot, changed keys, or a whole upsert read)
//! -> [`normalize`] (Arrow batches with the [`schema`] of each table) ->
//! [`sink`] (partitions replaced or merged, one atomic PUT each) -> [`state`]
//! (watermark or cursor saved after the commit). [`pipeline::run_once`] strings them together; [`query`] reads
//! the warehouse back with the `sql/` views ([`serve`]: to Postgres clients); [`simulator`] fakes the APIs.

#![forbid(unsafe_code)]
#![warn(rust_2018_idioms)]

pub mod calendar;
pub mod cli;
pub mod config;
pub mod dialect;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod normalize;
pub mod notify;
pub mod output;
pub mod pipeline;
pub mod privacy;
pub mod query;
pub mod report;
pub mod schedule;
pub mod schema;
pub mod serve;
pub mod shell;
pub mod simulator;
pub mod sink;
pub mod state;

pub use error::{Error, Result};
