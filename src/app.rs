//! The commands, from validated arguments to results. `main` maps the errors to exit codes:
//! 2 for a bad pipeline file, 1 for a failed stage or any other error.

use crate::cache::Store;
use crate::cli::{Cli, Command, PipelineArgs};
use crate::diagnostic::PipelineError;
use crate::executor::{self, ExecOptions, LocalLauncher};
use crate::key::{self, FileDigests, KeyRecord};
use crate::pipeline::{self, DeviceSetting, Pipeline};
use crate::plan::{self, PlanView};
use crate::progress::Output;
use anyhow::{bail, Context, Result};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Stages failed during a run. Exit code 1.
#[derive(Debug, thiserror::Error)]
#[error("{failed} stage(s) failed in `{pipeline}`; the run record is in {record}/")]
pub struct StagesFailed {
    pub pipeline: String,
    pub failed: usize,
    pub record: String,
}

/// The exit code for an error.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    if e.downcast_ref::<PipelineError>().is_some() {
        2
    } else {
        1
    }
}

pub struct Project {
    pub root: PathBuf,
    pub store: Store,
}

impl Project {
    pub fn at(root: &Path) -> Self {
        Project {
            root: root.to_path_buf(),
            store: Store::new(&root.join("outputs")),
        }
    }
}

struct Loaded {
    pipeline: Pipeline,
    records: Vec<KeyRecord>,
    device: String,
}

fn load(project: &Project, args: &PipelineArgs) -> Result<Loaded> {
    let mut pipeline = pipeline::load(&args.file, &args.sets)?;
    if let Some(d) = &args.device {
        pipeline.device = DeviceSetting::parse(d).expect("clap checked the value");
    }
    let device = pipeline.device.resolve().to_string();
    if device == "cuda" && !cfg!(feature = "cuda") {
        bail!("device `cuda` needs a build with the `cuda` feature (scripts/build-cuda.sh); use `--device cpu`");
    }
    let records = key::compute(
        &pipeline,
        &project.root,
        &device,
        &mut FileDigests::default(),
    )?;
    Ok(Loaded {
        pipeline,
        records,
        device,
    })
}

pub fn run(cli: Cli, root: &Path) -> Result<()> {
    let project = Project::at(root);
    let out = Output::detect(cli.quiet);
    match cli.command {
        Command::Run {
            pipeline: args,
            targets,
            force,
            dry_run,
            jobs,
            keep_going,
        } => {
            let l = load(&project, &args)?;
            let p = &l.pipeline;
            let targets = p.resolve_names(&targets)?;
            let force = p.resolve_names(&force)?;
            let store = &project.store;
            let plan = plan::make_plan(
                p,
                &l.records,
                &|k| executor::cached_state(store, k),
                &targets,
                &force,
            );
            if dry_run {
                print!("{}", PlanView(p, &plan));
                return Ok(());
            }
            let _lock = store.lock(|path| {
                eprintln!(
                    "waiting for another seqpipe run to finish (lock {})...",
                    path.display()
                )
            })?;
            // Re-plan under the lock: another process may have committed meanwhile.
            let plan = plan::make_plan(
                p,
                &l.records,
                &|k| executor::cached_state(store, k),
                &targets,
                &force,
            );
            for s in &plan.steps {
                if let plan::Action::Run(plan::Reason::Corrupt(why)) = &s.action {
                    eprintln!("warning: {why}");
                }
            }
            out.println(&format!(
                "{}: {} stages, {} to run",
                p.name,
                plan.steps.len(),
                plan.to_run()
            ));
            let opts = ExecOptions {
                jobs,
                keep_going,
                root: project.root.clone(),
                device: l.device.clone(),
            };
            let record =
                executor::execute(p, &l.records, &plan, store, &opts, &LocalLauncher, &out)?;
            let ran = record
                .stages
                .iter()
                .filter(|s| s.status == executor::Status::Ran)
                .count();
            let hits = record
                .stages
                .iter()
                .filter(|s| s.status == executor::Status::Hit)
                .count();
            if record.failed() > 0 {
                return Err(StagesFailed {
                    pipeline: p.name.clone(),
                    failed: record.failed(),
                    record: format!("outputs/{}/runs", p.name),
                }
                .into());
            }
            println!(
                "{}: {ran} ran, {hits} cached, in {:.2} s; outputs in {}",
                p.name,
                record.seconds,
                store.outputs().join(&p.name).display()
            );
            Ok(())
        }
        Command::Status { pipeline: args } => {
            let l = load(&project, &args)?;
            let st = crate::status::status(&l.pipeline, &l.records, &project.store);
            print!("{}", crate::status::StatusView(&l.pipeline, &st));
            Ok(())
        }
        Command::Dag {
            pipeline: args,
            format,
        } => {
            let p = pipeline::load(&args.file, &args.sets)?;
            print!("{}", crate::dag::render(&p, format));
            Ok(())
        }
        Command::Gc { dry_run } => gc(&project, dry_run),
        Command::Compare {
            pipeline: args,
            stage,
        } => compare(&project, &args, stage.as_deref()),
        Command::Bench {
            cell,
            hidden,
            epochs,
            device,
            corpus,
        } => {
            if device == "cuda" && !cfg!(feature = "cuda") {
                bail!(
                    "`--device cuda` needs a build with the `cuda` feature (scripts/build-cuda.sh)"
                );
            }
            crate::bench::run(&crate::bench::BenchArgs {
                cells: cell,
                hidden,
                epochs,
                device,
                corpus: project.root.join(corpus),
                threads: cli.threads,
            })
        }
        Command::Kinds => {
            for k in crate::stages::registry() {
                println!("{:<16} v{}  {}", k.name, k.version, k.about);
                if let crate::stages::Roles::Fixed(r) = k.roles {
                    if !r.is_empty() {
                        println!("{:<16}     inputs: {}", "", r.join(", "));
                    }
                } else {
                    println!("{:<16}     inputs: any stages", "");
                }
                if !k.params.is_empty() {
                    println!("{:<16}     params: {}", "", k.params.join(", "));
                }
            }
            Ok(())
        }
        Command::Schema => {
            print!("{}", crate::schema::pipeline_schema_text());
            Ok(())
        }
    }
}

/// `seqpipe compare`: one table per swept stage, from the stages' current outputs.
fn compare(project: &Project, args: &PipelineArgs, only: Option<&str>) -> Result<()> {
    let l = load(project, args)?;
    let p = &l.pipeline;
    let mut origins: Vec<&str> = Vec::new();
    for s in &p.stages {
        if !origins.contains(&s.origin.as_str()) {
            origins.push(&s.origin);
        }
    }
    if let Some(o) = only {
        if !origins.contains(&o) {
            let d = crate::diagnostic::Diagnostic::new(
                &p.file,
                "",
                format!("no stage `{o}` in `{}`", p.name),
            )
            .with_help(crate::diagnostic::suggest(o, &origins, "stages"));
            return Err(PipelineError {
                diagnostics: vec![d],
            }
            .into());
        }
    }
    let mut shown = 0;
    for o in origins {
        let variants: Vec<usize> = (0..p.stages.len())
            .filter(|&i| p.stages[i].origin == o)
            .collect();
        if only.is_some_and(|x| x != o) || (only.is_none() && variants.len() < 2) {
            continue;
        }
        let rows: Vec<crate::results::RowSource> = variants
            .iter()
            .map(|&i| {
                let key = l.records[i].key();
                let dir = match project.store.lookup(&key) {
                    crate::cache::Lookup::Hit(d) => Some(d),
                    _ => None,
                };
                crate::results::RowSource {
                    name: p.stages[i].name.clone(),
                    params: p.stages[i].params.canonical_params(),
                    dir,
                }
            })
            .collect();
        println!("{o} ({} variants)", rows.len());
        print!("{}", crate::results::table(&rows, &[]).text());
        println!();
        shown += 1;
    }
    if shown == 0 {
        println!(
            "`{}` has no swept stages (add `matrix:` to a stage, or name one with --stage)",
            p.name
        );
    }
    Ok(())
}

/// The pipeline files shipped in `pipelines/`.
pub fn shipped_pipelines(root: &Path) -> Result<Vec<PathBuf>> {
    let dir = root.join("pipelines");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    Ok(files)
}

fn gc(project: &Project, dry_run: bool) -> Result<()> {
    let mut keep = HashSet::new();
    let mut digests = FileDigests::default();
    for f in shipped_pipelines(&project.root)? {
        // A pipeline that does not load would lose its entries: refuse rather than guess.
        let p = pipeline::load(&f, &[])
            .with_context(|| format!("gc needs every pipeline to load; fix {}", f.display()))?;
        let device = p.device.resolve();
        for r in key::compute(&p, &project.root, device, &mut digests)? {
            keep.insert(r.key());
        }
    }
    let _lock = project.store.lock(|path| {
        eprintln!(
            "waiting for another seqpipe run to finish (lock {})...",
            path.display()
        )
    })?;
    let (removed, bytes) = project.store.gc(&keep, dry_run)?;
    let verb = if dry_run { "would remove" } else { "removed" };
    println!(
        "gc: {verb} {} entries, {} bytes ({:.1} MiB); kept {} reachable",
        removed.len(),
        bytes,
        bytes as f64 / 1048576.0,
        keep.len()
    );
    Ok(())
}
