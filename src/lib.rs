//! seqpipe: YAML pipelines of cached stages for sequence-model experiments.
//!
//! Data flow: config → pipeline (analyzer) → graph → key → plan → cache → executor →
//! stages/* → nn (the only code that imports dfdx).

pub mod app;
pub mod artifacts;
pub mod bench;
pub mod cache;
pub mod claim;
pub mod cli;
pub mod config;
pub mod context;
pub mod dag;
pub mod diagnostic;
pub mod executor;
pub mod graph;
pub mod job;
pub mod key;
pub mod launcher;
pub mod nn;
pub mod pipeline;
pub mod plan;
pub mod plot;
pub mod progress;
pub mod resources;
pub mod results;
pub mod slurm;
pub mod schema;
pub mod stages;
pub mod status;
pub mod sweep;
pub mod view;
