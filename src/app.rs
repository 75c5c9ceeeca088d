//! The commands, from validated arguments to results. `main` maps the errors to exit codes:
//! 2 for a bad pipeline file, 1 for a failed stage or any other error.

use crate::cache::Store;
use crate::cli::{Cli, Command, PipelineArgs};
use crate::diagnostic::PipelineError;
use crate::executor::{self, ExecOptions};
use crate::key::{self, FileDigests, KeyRecord};
use crate::launcher::{Launcher, LauncherKind, LauncherSetting, LocalLauncher, ProcessLauncher};
use crate::pipeline::{self, Pipeline};
use crate::plan::{self, PlanView};
use crate::progress::Output;
use anyhow::{bail, Context, Result};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    pub store: Arc<Store>,
    /// The store was named (`--store`, `SEQPIPE_STORE`), not the default.
    pub store_named: bool,
}

impl Project {
    /// The project in `root`, with its store in `store` (default `outputs/.seqpipe`).
    pub fn at(root: &Path, store: Option<&Path>) -> Self {
        let outputs = root.join("outputs");
        let store_named = store.is_some();
        let store = match store {
            Some(s) => Store::with_meta(&outputs, &root.join(s)),
            None => Store::new(&outputs),
        };
        Project {
            root: root.to_path_buf(),
            store: Arc::new(store),
            store_named,
        }
    }

    /// For commands that read the store (verify, gc, status): a store path that is a file is an
    /// error; a named store that does not exist is one too (a typo would otherwise read as an
    /// empty store), and the default one not existing yet just means nothing has run here.
    /// Returns whether the store exists.
    pub fn check_store(&self) -> Result<bool> {
        let meta = self.store.meta();
        if meta.exists() && !meta.is_dir() {
            bail!(
                "{} is a file, but seqpipe keeps its store (a folder) there; move the file away or name another store",
                meta.display()
            );
        }
        if !meta.exists() && self.store_named {
            bail!(
                "no store at {}: nothing has run with it yet (check the --store path or SEQPIPE_STORE; a run creates it)",
                meta.display()
            );
        }
        Ok(meta.exists())
    }
}

/// Damage found by `seqpipe verify`. Exit code 1.
#[derive(Debug, thiserror::Error)]
#[error("{0} damaged entries or views (run `seqpipe verify --repair` to remove them)")]
pub struct Damaged(pub usize);

struct Loaded {
    pipeline: Pipeline,
    records: Vec<KeyRecord>,
    device: crate::device::Device,
}

fn load(project: &Project, args: &PipelineArgs) -> Result<Loaded> {
    let mut pipeline = pipeline::load(&args.file, &args.sets)?;
    if let Some(d) = args.device {
        pipeline.device = d;
    }
    let device = pipeline.device.resolve();
    if let Err(why) = device.check_built() {
        // A usage error (exit 2), at the flag or the file's `device:` that asked for it.
        let d = match &args.device {
            Some(d) => {
                crate::diagnostic::Diagnostic::new(format!("--device {}", d.name()), "", why)
            }
            None => pipeline.diag("device", why),
        };
        return Err(PipelineError {
            diagnostics: vec![d],
        }
        .into());
    }
    let records = key::compute(
        &pipeline,
        &project.root,
        device,
        &mut FileDigests::default(),
    )?;
    Ok(Loaded {
        pipeline,
        records,
        device,
    })
}

pub fn run(cli: Cli, root: &Path) -> Result<()> {
    let project = Project::at(root, cli.store.as_deref());
    let out = Output::detect(cli.quiet);
    match cli.command {
        Command::Run {
            pipeline,
            targets,
            force,
            dry_run,
            jobs,
            keep_going,
            launcher,
            remote,
        } => run_pipeline(
            &project,
            &out,
            cli.threads,
            &RunArgs {
                pipeline,
                targets,
                force,
                dry_run,
                jobs,
                keep_going,
                launcher,
                remote,
                quiet: cli.quiet,
            },
        ),
        Command::Verify { repair } => {
            project.check_store()?;
            verify(&project, repair)
        }
        Command::ExecJob { file, result } => exec_job(&file, result.as_deref()),
        Command::Status { pipeline: args } => {
            project.check_store()?;
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
        Command::Gc {
            dry_run,
            older_than,
            remote: Some(url),
        } => remote_gc(&project, &url, dry_run, older_than),
        Command::Gc {
            dry_run,
            older_than,
            remote: None,
        } => {
            project.check_store()?;
            gc(&project, dry_run, older_than)
        }
        Command::Push { pipelines, remote } => push(&project, &pipelines, &remote),
        Command::Pull {
            pipeline: args,
            stages,
            remote,
        } => pull(&project, &args, &stages, &remote, &out),
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
            unit,
            embedding,
            breakdown,
        } => {
            if device == crate::device::Device::Cuda && !cfg!(feature = "cuda") {
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
                unit,
                embedding,
                breakdown,
            })
        }
        Command::Kinds { kind: Some(kind) } => describe_kind(&kind),
        Command::Kinds { kind: None } => {
            list_kinds();
            Ok(())
        }
        Command::Schema => {
            print!("{}", crate::schema::pipeline_schema_text());
            Ok(())
        }
    }
}

/// What `seqpipe run` was asked.
struct RunArgs {
    pipeline: PipelineArgs,
    targets: Vec<String>,
    force: Vec<String>,
    dry_run: bool,
    jobs: Option<usize>,
    keep_going: bool,
    /// `--executor`: the launcher.
    launcher: Option<LauncherKind>,
    /// `--remote`: the remote store to pull from and push to.
    remote: crate::cli::RemoteArgs,
    quiet: bool,
}

/// `seqpipe run`, in the steps of a run: load → choose the launcher → (a dry run prints the
/// plan) → prepare the store → plan → make the launcher → execute (it publishes each result,
/// the run record and the results page) → say what failed, or summarise.
fn run_pipeline(project: &Project, out: &Output, threads: usize, args: &RunArgs) -> Result<()> {
    let l = load(project, &args.pipeline)?;
    let p = &l.pipeline;
    let targets = p.resolve_names(&args.targets)?;
    let force = p.resolve_names(&args.force)?;
    let setting = launcher_setting(p, args.launcher);
    let jobs = args.jobs.unwrap_or(setting.kind.default_jobs());
    if jobs == 0 {
        bail!("`-j 0` would run nothing: give at least 1 (stages to run at once)");
    }
    let plan_run = || {
        let store = &project.store;
        plan::make_plan(p, &l.records, &|k| store.cached(k), &targets, &force)
    };
    if args.dry_run {
        return dry_run(project, &l, &targets, &force, &args.remote, args.quiet);
    }
    prepare_store(&project.store, p)?;
    // On a remote (`--remote`): pull what the plan can take from there first.
    let link = open_link(project, &args.remote, args.quiet)?;
    if let Some(link) = &link {
        crate::remote::pull_for_plan(link, p, &l.records, &targets, &force, out)?;
    }
    let plan = plan_run();
    announce(p, &plan, out);
    let started_unix_ms = crate::claim::now_ms();
    let run_id = format!("{started_unix_ms}-{}", std::process::id());
    install_interrupt_handler();
    let mut launcher = make_launcher(project, p, &setting, &run_id, threads, out)?;
    let opts = ExecOptions {
        jobs,
        keep_going: args.keep_going,
        root: project.root.clone(),
        device: l.device,
        threads,
        launcher: setting.kind,
        run_id,
        started_unix_ms,
        remote: link.clone(),
    };
    let store = &project.store;
    let record = executor::execute(p, &l.records, &plan, store, &opts, launcher.as_mut(), out);
    // What committed is pushed even when a stage failed.
    let pushed = link.as_ref().map(|l| l.finish()).transpose()?;
    let record = record?;
    fail_if_stages_failed(p, &record)?;
    if let (Some(l), Some((n, bytes))) = (&link, pushed) {
        if n > 0 {
            out.println(&format!(
                "  pushed {n} entries ({}) to {}",
                size_text(bytes),
                l.url()
            ));
        }
    }
    summarise(p, &plan, &record, store, link.is_some());
    Ok(())
}

/// The launcher a run uses: `--executor` (with the file's options when it names the same
/// kind), else the file's `executor:`, else local.
fn launcher_setting(p: &Pipeline, flag: Option<LauncherKind>) -> LauncherSetting {
    match flag {
        Some(kind) => match &p.launcher {
            Some(s) if s.kind == kind => s.clone(),
            _ => LauncherSetting::of(kind),
        },
        None => p
            .launcher
            .clone()
            .unwrap_or(LauncherSetting::of(LauncherKind::Local)),
    }
}

/// Before anything runs: the folders seqpipe writes are folders, the store can be written, and
/// what crashed runs left behind (their owners are gone) is gone.
fn prepare_store(store: &Store, p: &Pipeline) -> Result<()> {
    for d in [
        store.outputs().to_path_buf(),
        store.outputs().join(&p.name),
        store.runs_dir(&p.name),
        store.meta().to_path_buf(),
    ] {
        if d.exists() && !d.is_dir() {
            bail!(
                "{} is a file, but seqpipe keeps a folder there; move the file away",
                d.display()
            );
        }
    }
    // The store's folders are real folders and it can be written: said before any work.
    store.prepare()?;
    store.clean_leftovers();
    crate::view::clean_leftovers(store.outputs(), &p.name);
    Ok(())
}

/// Say what the plan will do: broken entries it recomputes, and how many stages run.
fn announce(p: &Pipeline, plan: &plan::Plan, out: &Output) {
    for s in &plan.steps {
        if let plan::Action::Run(plan::Reason::Corrupt(why)) = &s.action {
            eprintln!("warning: {why}; it will be quarantined and recomputed");
        }
    }
    out.println(&format!(
        "{}: {} stages, {} to run{}",
        p.name,
        plan.steps.len(),
        plan.to_run(),
        plan::twins_note(plan.twins())
    ));
}

/// The launcher of `setting`; its job files go to the run's folder of the run record.
fn make_launcher(
    project: &Project,
    p: &Pipeline,
    setting: &LauncherSetting,
    run_id: &str,
    threads: usize,
    out: &Output,
) -> Result<Box<dyn Launcher>> {
    let store = &project.store;
    let dir = store.runs_dir(&p.name).join(run_id);
    Ok(match setting.kind {
        LauncherKind::Local => Box::new(LocalLauncher::new(store.clone(), out.clone())),
        LauncherKind::Process => Box::new(ProcessLauncher::new(dir, threads, out.clone())?),
        LauncherKind::Slurm => Box::new(crate::slurm::SlurmLauncher::new(
            dir,
            project.root.clone(),
            threads,
            run_id.to_string(),
            setting,
            store.clone(),
            out.clone(),
        )?),
    })
}

/// A run in which stages failed is an error (exit 1) that points at the run record.
fn fail_if_stages_failed(p: &Pipeline, record: &executor::RunRecord) -> Result<()> {
    if record.failed() == 0 {
        return Ok(());
    }
    Err(StagesFailed {
        pipeline: p.name.clone(),
        failed: record.failed(),
        record: format!("outputs/{}/runs", p.name),
    }
    .into())
}

/// The last line of a run: what ran, what was cached, and where the outputs are. A planned run
/// served by a stage of the same key that ran here is no cache hit: it counts as the plan did.
fn summarise(
    p: &Pipeline,
    plan: &plan::Plan,
    record: &executor::RunRecord,
    store: &Store,
    remote: bool,
) {
    let ran = record.count(executor::Status::Ran);
    let twins = plan.twins();
    let hits = record.count(executor::Status::Hit) + record.count(executor::Status::Reused) - twins;
    let pulled = if remote {
        format!(", {} pulled", record.count(executor::Status::Pulled))
    } else {
        String::new()
    };
    println!(
        "{}: {ran} ran{pulled}, {hits} cached{}, in {:.2} s; outputs in {}",
        p.name,
        plan::twins_note(twins),
        record.seconds,
        store.outputs().join(&p.name).display()
    );
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
        let n = rows.len();
        println!("{o} ({n} variant{})", if n == 1 { "" } else { "s" });
        print!("{}", crate::results::table(&rows, &[], true).text());
        let missing = rows.iter().filter(|r| r.dir.is_none()).count();
        if missing > 0 {
            // Rows without numbers: say why instead of leaving bare names.
            let sets: String = args.sets.iter().map(|s| format!(" --set '{s}'")).collect();
            println!(
                "({missing} of {n} not computed with these params yet: `seqpipe run {}{sets}` computes them)",
                args.file.display()
            );
        }
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

/// `seqpipe kinds`: every kind, its inputs and params.
fn list_kinds() {
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
}

/// `seqpipe kinds KIND`: the kind, its inputs and output, and a line per param.
fn describe_kind(kind: &str) -> Result<()> {
    let reg = crate::stages::registry();
    let Some(k) = reg.iter().find(|k| k.name == kind) else {
        let names: Vec<&str> = reg.iter().map(|k| k.name).collect();
        let d =
            crate::diagnostic::Diagnostic::new("seqpipe kinds", "", format!("no kind `{kind}`"))
                .with_help(crate::diagnostic::suggest(kind, &names, "kinds"));
        return Err(PipelineError {
            diagnostics: vec![d],
        }
        .into());
    };
    println!("{}  v{}  {}", k.name, k.version, k.about);
    match k.roles {
        crate::stages::Roles::Fixed([]) => println!("inputs: none"),
        crate::stages::Roles::Fixed(r) => println!("inputs: {}", r.join(", ")),
        crate::stages::Roles::AnyNonEmpty => println!("inputs: any stages (one or more)"),
    }
    if let Some(o) = k.output {
        println!("output: {}", o.name());
    }
    let params = crate::schema::kind_params(kind).unwrap_or_default();
    if params.is_empty() {
        println!("params: none");
        return Ok(());
    }
    println!("params (a default of `–`: none, the stage decides):");
    let w = params.iter().map(|p| p.name.len()).max().unwrap_or(0);
    let defaults: Vec<String> = params
        .iter()
        .map(|p| match &p.default {
            None => "required".to_string(),
            Some(d) => format!("default {d}"),
        })
        .collect();
    let tw = params
        .iter()
        .map(|p| p.ty.chars().count())
        .max()
        .unwrap_or(0);
    let dw = defaults
        .iter()
        .map(|d| d.chars().count())
        .max()
        .unwrap_or(0);
    for (p, default) in params.iter().zip(&defaults) {
        println!(
            "  {:<w$}  {:<tw$}  {default:<dw$}  {}",
            p.name, p.ty, p.about
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

/// The keys every pipeline in `pipelines/` reaches (gc keeps them).
fn reachable_keys(project: &Project) -> Result<HashSet<key::Key>> {
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
    Ok(keep)
}

fn gc(project: &Project, dry_run: bool, older_than: f64) -> Result<()> {
    if !(older_than >= 0.0 && older_than.is_finite()) {
        bail!("`--older-than {older_than}` must be a number of days, 0 or more");
    }
    let keep = reachable_keys(project)?;
    let recent = std::time::Duration::from_secs_f64(older_than * 86400.0);
    let mut r = project.store.gc(&keep, dry_run, recent)?;
    if dry_run {
        r.removed
            .sort_by(|a, b| a.stage.cmp(&b.stage).then(a.key.cmp(&b.key)));
        for e in &r.removed {
            let stage = if e.stage.is_empty() { "?" } else { &e.stage };
            println!(
                "  would remove  {}  {:>10}  {stage}",
                e.key.short(),
                size_text(e.bytes)
            );
        }
    }
    let verb = if dry_run { "would remove" } else { "removed" };
    let mut why = vec![format!("{} reachable from pipelines/", r.kept_reachable)];
    if r.kept_shown > 0 {
        why.push(format!("{} shown in outputs/", r.kept_shown));
    }
    if r.kept_in_use > 0 {
        why.push(format!(
            "{} in use{}",
            r.kept_in_use,
            if project.store.is_shared() {
                " or used recently"
            } else {
                ""
            }
        ));
    }
    if r.kept_checkpoints > 0 {
        why.push(format!(
            "and {} checkpoint(s) written within {older_than} day(s) or in use",
            r.kept_checkpoints
        ));
    }
    let other = if r.other_bytes > 0 {
        format!(
            ", {} of them stale checkpoints and quarantined entries",
            size_text(r.other_bytes)
        )
    } else {
        String::new()
    };
    println!(
        "gc: {verb} {} entries, {} bytes ({:.1} MiB{other}); {} {} entries ({})",
        r.removed.len(),
        r.bytes,
        r.bytes as f64 / 1048576.0,
        if dry_run { "would keep" } else { "kept" },
        r.kept(),
        why.join(", ")
    );
    Ok(())
}

/// "812 B", "12.3 KiB", "4.5 MiB".
fn size_text(b: u64) -> String {
    if b < 1024 {
        format!("{b} B")
    } else if b < 1024 * 1024 {
        format!("{:.1} KiB", b as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", b as f64 / 1048576.0)
    }
}

/// On Ctrl-C: stop the child jobs, release this process's claims, exit 130. Committed entries
/// are whole and staging folders are removed by a later run, so nothing partial remains.
fn install_interrupt_handler() {
    let _ = ctrlc::set_handler(|| {
        let n = crate::launcher::kill_children() + crate::slurm::cancel_submitted();
        crate::claim::release_all_on_exit();
        crate::cache::remove_live_files_on_exit();
        crate::report_html::end_live_pages_on_exit();
        if n > 0 {
            eprintln!("\ninterrupted: stopped {n} running job(s)");
        } else {
            eprintln!("\ninterrupted");
        }
        std::process::exit(130);
    });
}

fn verify(project: &Project, repair: bool) -> Result<()> {
    let t = std::time::Instant::now();
    let r = project.store.verify_all(repair)?;
    for (what, why) in &r.damaged {
        println!("damaged  {what}: {why}");
    }
    for (path, what) in &r.strange {
        println!(
            "strange  {}: {what}; seqpipe did not put it there and never follows or removes \
             it (check who did, then remove it by hand)",
            path.display()
        );
    }
    for (view, key) in &r.absent {
        println!(
            "note     view {view} shows entry {}, which is no longer in the store (not damage: \
             its files are not checked; the next run of its pipeline recomputes the entry)",
            key.short()
        );
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "verify: {} entries, {:.1} MiB hashed in {secs:.2} s; {} damaged{}{}{}",
        r.entries,
        r.bytes as f64 / 1048576.0,
        r.damaged.len(),
        if r.strange.is_empty() {
            String::new()
        } else {
            format!(", {} strange (not the store's)", r.strange.len())
        },
        if r.absent.is_empty() {
            String::new()
        } else {
            format!(", {} view(s) without an entry", r.absent.len())
        },
        if repair && r.repaired > 0 {
            format!(", {} removed (the next run recomputes them)", r.repaired)
        } else {
            String::new()
        }
    );
    if r.strange.is_empty() && (r.damaged.is_empty() || (repair && r.repaired == r.damaged.len())) {
        Ok(())
    } else {
        Err(Damaged(r.damaged.len() + r.strange.len()).into())
    }
}

/// `seqpipe exec-job FILE`: run one stage job in this process and commit its entry.
fn exec_job(file: &Path, result: Option<&Path>) -> Result<()> {
    let spec = crate::job::JobSpec::read(file)?;
    let outputs = spec
        .store
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| spec.root.join("outputs"));
    let store = Store::with_meta(&outputs, &spec.store);
    // Its output is a log (the driver relays its notes and progress lines): plain lines.
    let out = Output::job_log(std::time::Duration::from_secs(2));
    install_interrupt_handler();
    println!(
        "exec-job: stage `{}` of `{}` ({}), key {}",
        spec.stage,
        spec.pipeline,
        spec.kind,
        spec.key.short()
    );
    let r = crate::job::run_job(&spec, &store, out.stage(&spec.stage))?;
    println!("exec-job: {:?} in {:.2} s", r.outcome, r.seconds);
    if let Some(path) = result {
        crate::cache::write_synced(path, &serde_json::to_vec_pretty(&r)?)?;
    }
    Ok(())
}

/// The link to the remote named by `--remote` or `SEQPIPE_REMOTE`, if any.
/// `run --dry-run`: the plan, and with a remote, what of it would be pulled from there. Reads
/// the remote's records only (no blob is fetched) and writes nothing.
fn dry_run(
    project: &Project,
    l: &Loaded,
    targets: &[usize],
    force: &[usize],
    remote: &crate::cli::RemoteArgs,
    quiet: bool,
) -> Result<()> {
    let (p, store) = (&l.pipeline, &project.store);
    let link = open_link(project, remote, quiet)?;
    let mut on_remote = std::collections::HashSet::new();
    if let Some(link) = &link {
        let keys: Vec<crate::key::Key> = l.records.iter().map(|r| r.key()).collect();
        on_remote.extend(
            link.missing_records(&keys)?
                .into_iter()
                .map(|e| e.entry.key),
        );
    }
    let (plan, served) =
        crate::remote::plan_with_remote(store, &on_remote, p, &l.records, targets, force);
    print!("{}", PlanView(p, &plan));
    if let Some(link) = &link {
        let pulled: Vec<&str> = served
            .iter()
            .map(|&i| p.stages[plan.steps[i].stage].name.as_str())
            .collect();
        if link.is_down() {
            println!(
                "remote {}: not reachable, so the plan above is this store's",
                link.url()
            );
        } else if pulled.is_empty() {
            println!(
                "remote {}: nothing of this plan would be pulled from it",
                link.url()
            );
        } else {
            println!(
                "remote {}: {} of the hits above would be pulled from it: {}",
                link.url(),
                pulled.len(),
                pulled.join(", ")
            );
        }
    }
    Ok(())
}

fn open_link(
    project: &Project,
    args: &crate::cli::RemoteArgs,
    quiet: bool,
) -> Result<Option<Arc<crate::remote::Link>>> {
    let Some(url) = &args.remote else {
        if args.remote_required {
            bail!("--remote-required needs a remote: give --remote URL or set SEQPIPE_REMOTE");
        }
        return Ok(None);
    };
    let r = crate::remote::open(url, &project.root)?;
    Ok(Some(Arc::new(crate::remote::Link::new(
        r,
        project.store.clone(),
        args.remote_required,
        quiet,
    ))))
}

/// `push` and `pull` are about the remote: a remote that cannot be used is an error there.
fn required_link(
    project: &Project,
    args: &crate::cli::RemoteArgs,
) -> Result<Arc<crate::remote::Link>> {
    let args = crate::cli::RemoteArgs {
        remote: args.remote.clone(),
        remote_required: true,
    };
    open_link(project, &args, false)?
        .ok_or_else(|| anyhow::anyhow!("no remote: give --remote URL or set SEQPIPE_REMOTE"))
}

/// `seqpipe push [PIPELINE…]`: the entries of these pipelines' stages (all the store's when
/// none are named), each verified here, to the remote.
fn push(project: &Project, pipelines: &[PathBuf], remote: &crate::cli::RemoteArgs) -> Result<()> {
    let link = required_link(project, remote)?;
    if !project.check_store()? {
        bail!(
            "nothing to push: no store at {} yet",
            project.store.meta().display()
        );
    }
    let t = std::time::Instant::now();
    let mut keys = Vec::new();
    if pipelines.is_empty() {
        keys.extend(project.store.entries()?.into_iter().map(|(k, _, _)| k));
    }
    for f in pipelines {
        let args = PipelineArgs {
            file: f.clone(),
            sets: Vec::new(),
            device: None,
        };
        keys.extend(load(project, &args)?.records.iter().map(|r| r.key()));
    }
    keys.sort();
    keys.dedup();
    let got = link.push_keys(&keys)?;
    let (n, bytes) = link.finish()?;
    let there = got
        .iter()
        .filter(|p| **p == Some(crate::remote::Pushed::There))
        .count();
    let absent = got.iter().filter(|p| p.is_none()).count();
    println!(
        "push: {n} pushed ({} of new blobs), {there} already there{}, in {:.2} s, to {}",
        size_text(bytes),
        if absent > 0 {
            format!(", {absent} not in this store (or damaged here)")
        } else {
            String::new()
        },
        t.elapsed().as_secs_f64(),
        link.url()
    );
    Ok(())
}

/// `seqpipe pull PIPELINE [STAGES…]`: what a run of these stages could take from the remote,
/// verified and committed to this store.
fn pull(
    project: &Project,
    args: &PipelineArgs,
    stages: &[String],
    remote: &crate::cli::RemoteArgs,
    out: &Output,
) -> Result<()> {
    let link = required_link(project, remote)?;
    let l = load(project, args)?;
    let targets = l.pipeline.resolve_names(stages)?;
    project.store.prepare()?;
    project.store.clean_leftovers();
    let t = std::time::Instant::now();
    let n = crate::remote::pull_for_plan(&link, &l.pipeline, &l.records, &targets, &[], out)?;
    println!(
        "pull: {n} entries pulled from {} in {:.2} s (`seqpipe run {}` shows them)",
        link.url(),
        t.elapsed().as_secs_f64(),
        args.file.display()
    );
    Ok(())
}

/// `seqpipe gc --remote URL`: the remote's garbage (see [`crate::remote::Link::gc`]).
fn remote_gc(project: &Project, url: &str, dry_run: bool, older_than: f64) -> Result<()> {
    if !(older_than >= 0.0 && older_than.is_finite()) {
        bail!("`--older-than {older_than}` must be a number of days, 0 or more");
    }
    let keep = reachable_keys(project)?;
    let args = crate::cli::RemoteArgs {
        remote: Some(url.to_string()),
        remote_required: true,
    };
    let link = required_link(project, &args)?;
    let grace = std::time::Duration::from_secs_f64(older_than * 86400.0);
    let r = link.gc(&keep, grace, dry_run)?;
    for p in &r.strange {
        println!("strange  {p}: not a name seqpipe writes under blobs/; left alone");
    }
    let verb = if dry_run { "would remove" } else { "removed" };
    println!(
        "gc {url}: {verb} {} records and {} blobs ({}); kept {} records (reachable from \
         pipelines/ or pushed or pulled within {older_than} day(s)) and {} blobs (named by a \
         kept record, or written within {} day(s))",
        r.removed_records.len(),
        r.removed_blobs,
        size_text(r.removed_bytes),
        r.kept_records,
        r.kept_blobs,
        (older_than).max(crate::remote::BLOB_GRACE_MIN.as_secs_f64() / 86400.0)
    );
    Ok(())
}
