//! Command-line flags, as parsed by clap. `app` turns them into validated work.

use crate::dag::DagFormat;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "seqpipe",
    version,
    about = "Reproducible sequence-model experiments: YAML pipelines of cached stages"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Print only errors and the final summary.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Threads of a training step (default 1). On 2 cores, 2 threads train the book's models
    /// faster than 1 at hidden 256 and 512; `seqpipe bench` measures it on your machine.
    #[arg(long, global = true, default_value_t = 1, env = "SEQPIPE_THREADS",
          value_parser = at_least_one)]
    pub threads: usize,
    /// The store folder (default `outputs/.seqpipe`). Several projects and users may share
    /// one, on a shared filesystem; views and run records stay in each project's `outputs/`.
    #[arg(long, global = true, env = "SEQPIPE_STORE", value_name = "DIR")]
    pub store: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct PipelineArgs {
    /// The pipeline file, e.g. pipelines/ex8_2_2.yaml
    pub file: PathBuf,
    /// Override a param for this run: `stage.param=value` (typed like YAML), `*.param=value` for
    /// every stage that sets it, `stage.matrix.param=[a, b]` to replace a sweep, or `seed=N`.
    #[arg(long = "set", value_name = "STAGE.PARAM=VALUE")]
    pub sets: Vec<String>,
    /// Device for model stages (overrides the pipeline's `device:`).
    #[arg(long, value_enum)]
    pub device: Option<crate::pipeline::DeviceSetting>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a pipeline (or TARGETS and what they need), reusing cached stages.
    Run {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Stages to bring up to date (with their ancestors); all when none are given.
        targets: Vec<String>,
        /// Recompute this stage and everything downstream of it, even if cached.
        #[arg(long, value_name = "STAGE")]
        force: Vec<String>,
        /// Print the plan (order, hit or miss per stage) and run nothing.
        #[arg(long)]
        dry_run: bool,
        /// Run up to N independent stages at once (default 1; 32 jobs in flight with slurm).
        #[arg(short = 'j', long, value_parser = at_least_one)]
        jobs: Option<usize>,
        /// After a failure, still run the stages that do not depend on it.
        #[arg(long)]
        keep_going: bool,
        /// Where stages run: `local` (threads of this process, the default), `process` (each
        /// stage a child `seqpipe exec-job`) or `slurm` (each model stage a Slurm batch job).
        /// Overrides the pipeline's `executor:`.
        /// (The launcher, in the code: "executor" there is the scheduler.)
        #[arg(long = "executor", value_name = "EXECUTOR", value_enum)]
        launcher: Option<crate::launcher_setting::LauncherKind>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Push this store's entries to a remote: those of PIPELINES' stages, or all when none are
    /// named.
    Push {
        /// Pipeline files whose stages' entries to push (all entries of the store when none).
        pipelines: Vec<PathBuf>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Pull a pipeline's entries (or STAGES' and what they need) from a remote into this store;
    /// the next `run` shows them.
    Pull {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Stages to pull (with what they need when the remote lacks them); all when none.
        stages: Vec<String>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Show which stages are fresh or stale, and why.
    Status {
        #[command(flatten)]
        pipeline: PipelineArgs,
    },
    /// Show the stage graph.
    Dag {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// `text` (the stages in run order, with their inputs), `dot` (Graphviz) or `mermaid`.
        #[arg(long, value_enum, default_value_t = DagFormat::Text)]
        format: DagFormat,
    },
    /// Compare the variants of swept stages: the params that differ and their results.
    Compare {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Only this stage (as written in the file); every swept stage when omitted.
        #[arg(long)]
        stage: Option<String>,
    },
    /// Drop cache entries that no pipeline in pipelines/ reaches and no view in outputs/ shows
    /// (on a shared store: that nothing has used for --older-than days either).
    Gc {
        /// List what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// On a shared store (`--store`), keep every entry used in the last DAYS days.
        #[arg(long, value_name = "DAYS", default_value_t = 30.0)]
        older_than: f64,
        /// Collect garbage on this remote instead (folder or s3://bucket/prefix): records of
        /// keys no pipeline in pipelines/ reaches that nobody pushed or pulled for --older-than
        /// days, then the blobs no record names.
        #[arg(long, value_name = "URL")]
        remote: Option<String>,
    },
    /// Re-hash every cache entry and every view: exit 1 and list what is damaged, 0 if clean.
    Verify {
        /// Remove damaged entries and views, so that the next run recomputes them.
        #[arg(long)]
        repair: bool,
    },
    /// Run one stage job from its description (what `--executor process` and cluster jobs run).
    ExecJob {
        /// The job description (JSON), as the executor writes it.
        file: PathBuf,
        /// Write the job's result (JSON) here, atomically, once its entry is committed.
        #[arg(long)]
        result: Option<PathBuf>,
    },
    /// List the stage kinds and their params; with KIND, each param's type, default and meaning.
    Kinds {
        /// A kind to describe in full, e.g. `train`.
        kind: Option<String>,
    },
    /// Training throughput (tokens/s) on the book's parity config.
    Bench {
        /// Cells to measure: rnn_scratch, rnn, gru, lstm.
        #[arg(long, value_delimiter = ',', default_value = "rnn", value_parser = bench_cell)]
        cell: Vec<String>,
        /// Hidden units to measure, e.g. 256,512 (each 1 to 65536).
        #[arg(long, value_delimiter = ',', default_value = "256", value_parser = bench_hidden)]
        hidden: Vec<usize>,
        /// Epochs per cell and size (1 or more); the table shows the median epoch's speed.
        #[arg(long, default_value_t = 5, value_parser = bench_epochs)]
        epochs: usize,
        /// Device to train on (`cuda` needs a build with the `cuda` feature).
        #[arg(long, value_enum, default_value_t = crate::device::Device::Cpu)]
        device: crate::device::Device,
        /// The corpus to train on.
        #[arg(long, default_value = "data/timemachine.txt")]
        corpus: PathBuf,
        /// `char`: the first 10,000 characters; `word`: all of the corpus in word tokens.
        #[arg(long, default_value = "char", value_parser = ["char", "word"])]
        unit: String,
        /// Embedding dimension of the input (default: one-hot).
        #[arg(long, value_parser = bench_embedding)]
        embedding: Option<usize>,
        /// Also print where a training step's time goes (ms and share per phase: products with
        /// GFLOP/s and % of the measured peak, cell kernels, packing and transposes, softmax /
        /// loss, norm and update), the CPU, the ISA and the kernel choices. Needs 2 epochs or
        /// more (the first is left out).
        #[arg(long)]
        breakdown: bool,
    },
    /// Print the JSON Schema (draft 2020-12) of pipeline files (committed as pipelines/schema.json).
    Schema,
}

/// Where results are shared (`run`, `push`, `pull`).
#[derive(Debug, clap::Args)]
pub struct RemoteArgs {
    /// A remote store: a folder (path or file:///path) or s3://bucket/prefix (endpoint and
    /// credentials from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION;
    /// AWS_ALLOW_HTTP=true for plain http). A run pulls what it misses and pushes what it
    /// computes.
    #[arg(long, env = "SEQPIPE_REMOTE", value_name = "URL")]
    pub remote: Option<String>,
    /// Fail when the remote cannot be used (by default: one warning, and the run goes on here).
    #[arg(long, env = "SEQPIPE_REMOTE_REQUIRED")]
    pub remote_required: bool,
}

/// A count that must be at least 1 (`--threads`, `-j`).
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1 (0 would run nothing)".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{s}` is not a whole number; give 1 or more")),
    }
}

/// A whole number from 1 to `max`; `what` says what 0 would mean.
fn in_range(s: &str, max: usize, zero: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err(format!("must be at least 1 ({zero})")),
        Ok(n) if n > max => Err(format!("must be {max} or less")),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{s}` is not a whole number; give 1 to {max}")),
    }
}

/// `bench --epochs`: the bounds of a pipeline's `epochs`.
fn bench_epochs(s: &str) -> Result<usize, String> {
    in_range(s, crate::stages::bounds::EPOCHS, "0 would measure nothing")
}

/// `bench --hidden`: the bounds of a pipeline's `hidden`.
fn bench_hidden(s: &str) -> Result<usize, String> {
    in_range(s, crate::stages::bounds::HIDDEN, "a layer needs units")
}

/// `bench --embedding`: the bounds of a pipeline's `embedding`.
fn bench_embedding(s: &str) -> Result<usize, String> {
    in_range(
        s,
        crate::stages::bounds::EMBEDDING,
        "leave it out for one-hot",
    )
}

/// The cells `seqpipe bench` measures.
pub const BENCH_CELLS: [&str; 4] = ["rnn_scratch", "rnn", "gru", "lstm"];

/// `bench --cell`: a known cell, with a suggestion for a near miss.
fn bench_cell(s: &str) -> Result<String, String> {
    let s = s.trim();
    if BENCH_CELLS.contains(&s) {
        Ok(s.to_string())
    } else {
        Err(crate::diagnostic::suggest(s, &BENCH_CELLS, "cells"))
    }
}

#[cfg(test)]
mod tests {
    use crate::device::Device;
    use crate::launcher_setting::LauncherKind;
    use crate::pipeline::DeviceSetting;
    use clap::ValueEnum;

    /// Each choice has one name: the flag's (`ValueEnum`), the file's and the store's (serde),
    /// and the one messages use (`name()`), so none can drift from the others.
    #[test]
    fn the_names_are_the_flags_and_the_files() {
        fn check<T: ValueEnum + serde::Serialize + std::fmt::Debug>(name: impl Fn(&T) -> &str) {
            for v in T::value_variants() {
                let flag = v.to_possible_value().unwrap();
                let serde = serde_json::to_value(v).unwrap();
                assert_eq!(flag.get_name(), name(v), "{v:?}");
                assert_eq!(serde.as_str(), Some(name(v)), "{v:?}");
                assert!(T::from_str(name(v), false).is_ok(), "{v:?}");
            }
        }
        check::<Device>(|d| d.name());
        check::<DeviceSetting>(|d| d.name());
        check::<LauncherKind>(|k| k.name());
        assert_eq!(LauncherKind::names(), ["local", "process", "slurm"]);
        assert_eq!(DeviceSetting::names(), ["cpu", "cuda", "auto"]);
        assert_eq!(DeviceSetting::parse("gpu"), None);
    }

    /// The flags take exactly those names, and say the choices when given another.
    #[test]
    fn flags_take_the_enums() {
        use clap::Parser;
        let a = super::Cli::try_parse_from([
            "seqpipe",
            "run",
            "p.yaml",
            "--device",
            "auto",
            "--executor",
            "slurm",
        ])
        .unwrap();
        let super::Command::Run {
            pipeline, launcher, ..
        } = a.command
        else {
            panic!("not a run: {a:?}");
        };
        assert_eq!(pipeline.device, Some(DeviceSetting::Auto));
        assert_eq!(launcher, Some(LauncherKind::Slurm));
        let e = super::Cli::try_parse_from(["seqpipe", "run", "p.yaml", "--executor", "slurmm"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("[possible values: local, process, slurm]"),
            "{e}"
        );
    }
}
