//! seqpipe: YAML pipelines of cached stages for sequence-model experiments.
//!
//! The modules follow the data: config → pipeline (analyzer) → graph → key → plan → store →
//! executor → stages → nn (the only code that imports dfdx).

// Reading a pipeline file and checking it: YAML (config), sweeps, the typed pipeline.
pub mod config;
pub mod diagnostic;
pub mod pipeline;
pub mod resources;
pub mod schema;
pub mod sweep;

// Its graph, the cache keys, and the plan a run (or a dry run) follows.
pub mod dag;
pub mod device;
pub mod graph;
pub mod key;
pub mod launcher_setting;
pub mod plan;
pub mod status;

// The store: entries and their digests, per-key claims, the human view.
pub mod bigmem;
pub mod cache;
pub mod claim;
pub mod fsutil;
pub mod owner;
pub mod remote;
pub mod upkeep;
pub mod view;

// Running a plan: the executor's state machine, launchers (local, process, slurm), the job
// description and its runtime, what a running stage sees, progress output.
pub mod context;
pub mod executor;
pub mod job;
pub mod launcher;
pub mod live;
pub mod progress;
pub mod slurm;

// The stage kinds, the artifact types they read and write, results tables, and charts.
pub mod artifacts;
pub mod plot;
pub mod report_html;
pub mod results;
pub mod stages;

// Models and training (the only code that imports dfdx), and the training benchmark.
pub mod bench;
pub mod nn;

// The command line: flags, then the commands.
pub mod app;
pub mod cli;
mod layering;
