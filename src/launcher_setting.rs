//! The launcher a run uses: where a pipeline's stages run. Users choose it with `--executor` or
//! `executor:` in the file (their word for it); in the code it is the launcher, and "executor"
//! is the scheduler (`executor.rs`). A leaf value type, made by the analyzer and read by the
//! run, so that the pipeline model does not depend on the launchers.

/// Where stages run: `local` in the seqpipe process, `process` in a child process per stage,
/// `slurm` as Slurm batch jobs (model stages; quick stages run in the driver unless
/// `submit_all`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
// The schema keeps the users' word for it.
#[schemars(rename = "ExecutorKind")]
pub enum LauncherKind {
    Local,
    Process,
    Slurm,
}

impl LauncherKind {
    /// `--executor`'s names (from `clap::ValueEnum`), which are the file's.
    pub fn parse(s: &str) -> Option<Self> {
        <Self as clap::ValueEnum>::from_str(s, false).ok()
    }

    /// Every name, for errors' "did you mean".
    pub fn names() -> Vec<&'static str> {
        <Self as clap::ValueEnum>::value_variants()
            .iter()
            .map(|v| v.name())
            .collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Process => "process",
            Self::Slurm => "slurm",
        }
    }

    /// `-j` when none is given: one stage at a time here, many jobs on a cluster.
    pub fn default_jobs(self) -> usize {
        match self {
            Self::Local | Self::Process => 1,
            Self::Slurm => 32,
        }
    }
}

/// The `executor:` of a pipeline file, or `--executor`: a kind and its options.
#[derive(Debug, Clone, PartialEq)]
pub struct LauncherSetting {
    pub kind: LauncherKind,
    /// slurm: seconds between two `squeue` polls (default 2; `SEQPIPE_SLURM_POLL`).
    pub poll: Option<f64>,
    /// slurm: submit every stage as a job, quick ones (text, tables, plots) too. By default
    /// those run in the driver: a job costs about a second of scheduling, they take ms.
    pub submit_all: bool,
}

impl LauncherSetting {
    pub fn of(kind: LauncherKind) -> Self {
        LauncherSetting {
            kind,
            poll: None,
            submit_all: false,
        }
    }

    /// Check a kind and its options; an error is (key path, message, help).
    pub fn parse(
        kind: &str,
        options: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self, (String, String, String)> {
        let Some(k) = LauncherKind::parse(kind) else {
            return Err((
                "executor".into(),
                format!("unknown executor `{kind}`"),
                crate::diagnostic::suggest(kind, &LauncherKind::names(), "executors"),
            ));
        };
        let mut s = LauncherSetting::of(k);
        const SLURM: &[&str] = &["poll", "submit_all"];
        for (name, v) in options {
            let path = format!("executor.{name}");
            match (k, name.as_str()) {
                (LauncherKind::Slurm, "poll") => match v.as_f64() {
                    Some(x) if x > 0.0 && x.is_finite() => s.poll = Some(x),
                    _ => {
                        return Err((
                            path,
                            format!("`poll` must be a positive number of seconds, found {v}"),
                            "e.g. `poll: 10` on a busy cluster".into(),
                        ))
                    }
                },
                (LauncherKind::Slurm, "submit_all") => match v.as_bool() {
                    Some(b) => s.submit_all = b,
                    None => {
                        return Err((
                            path,
                            format!("`submit_all` must be true or false, found {v}"),
                            "e.g. `submit_all: true`".into(),
                        ))
                    }
                },
                (LauncherKind::Slurm, _) => {
                    return Err((
                        path,
                        format!("unknown option `{name}` for executor `slurm`"),
                        crate::diagnostic::suggest(name, SLURM, "options"),
                    ))
                }
                _ => {
                    return Err((
                        path,
                        format!("unknown option `{name}` for executor `{kind}`"),
                        format!("the `{kind}` executor takes no options"),
                    ))
                }
            }
        }
        Ok(s)
    }
}
