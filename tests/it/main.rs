//! Integration tests, one binary (links once). Each runs the real pipeline
//! against the built-in simulator and compares the warehouse with figures
//! computed from the simulator's records.

mod support;

mod cli;
mod crm;
mod email;
mod faults;
mod forget;
mod hostile;
mod hostile2;
mod layout;
mod lock;
mod notify;
mod pipeline;
mod privacy;
mod report;
mod reporting;
mod s3;
mod schedule;
mod serve;
mod social25;
mod views;
