//! Runs the real `seqpipe` binary in temporary project folders: one test binary, one module per
//! area (`cargo test --test cli caching::` runs one area). insta keeps the snapshots next to the
//! modules, in tests/cli/snapshots/, named `cli__<module>__<name>.snap`.
//!
//! - `support`: shared helpers: a project folder, running seqpipe, run records, tiny_lm, Guard
//! - `caching`: hits and reruns, byte identity, status, gc, a shared store
//! - `plans`: dry runs, plan and dag snapshots, targets, `kinds`
//! - `training`: determinism, resume bit for bit, divergence, valid_fraction
//! - `pipelines`: every shipped pipeline runs quick, with plots; text stages' vector paths
//! - `store_faults`: flipped bytes, damaged checkpoints, views, --force, killed runs, leftovers
//! - `executors`: concurrency, keep-going, the process executor, child jobs, Ctrl-C, kills
//! - `slurm`: a real Slurm cluster (skipped without one, failing under CI=true)
//! - `bad_input`: error and limit snapshots, the schema, the fuzz test that nothing panics
//! - `trust`: inputs edited mid-run, planted links, crafted records in a shared store
//! - `report_page`: report.html, self-contained, in a real headless browser, live during a run
//! - `remote`: the remote store through a folder and an S3 server (moto)
//! - `speed`: `bench --breakdown` and the kernel choices

#[path = "cli/bad_input.rs"]
mod bad_input;
#[path = "cli/caching.rs"]
mod caching;
#[path = "cli/executors.rs"]
mod executors;
#[path = "cli/pipelines.rs"]
mod pipelines;
#[path = "cli/plans.rs"]
mod plans;
#[path = "cli/remote.rs"]
mod remote;
#[path = "cli/report_page.rs"]
mod report_page;
#[path = "cli/slurm.rs"]
mod slurm;
#[path = "cli/speed.rs"]
mod speed;
#[path = "cli/store_faults.rs"]
mod store_faults;
#[path = "cli/support.rs"]
mod support;
#[path = "cli/training.rs"]
mod training;
#[path = "cli/trust.rs"]
mod trust;
