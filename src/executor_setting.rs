//! Where a pipeline's stages run (`--executor`, or `executor:` in the file): a leaf value type,
//! made by the analyzer and read by the run, so that the pipeline model does not depend on the
//! launchers.

/// Where stages run: `local` in the seqpipe process, `process` in a child process per stage,
/// `slurm` as Slurm batch jobs (model stages; quick stages run in the driver unless
/// `submit_all`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ExecutorKind {
    Local,
    Process,
    Slurm,
}

impl ExecutorKind {
    pub const NAMES: &'static [&'static str] = &["local", "process", "slurm"];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "local" => Some(Self::Local),
            "process" => Some(Self::Process),
            "slurm" => Some(Self::Slurm),
            _ => None,
        }
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
pub struct ExecutorSetting {
    pub kind: ExecutorKind,
    /// slurm: seconds between two `squeue` polls (default 2; `SEQPIPE_SLURM_POLL`).
    pub poll: Option<f64>,
    /// slurm: submit every stage as a job, quick ones (text, tables, plots) too. By default
    /// those run in the driver: a job costs about a second of scheduling, they take ms.
    pub submit_all: bool,
}

impl ExecutorSetting {
    pub fn of(kind: ExecutorKind) -> Self {
        ExecutorSetting {
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
        let Some(k) = ExecutorKind::parse(kind) else {
            return Err((
                "executor".into(),
                format!("unknown executor `{kind}`"),
                crate::diagnostic::suggest(kind, ExecutorKind::NAMES, "executors"),
            ));
        };
        let mut s = ExecutorSetting::of(k);
        const SLURM: &[&str] = &["poll", "submit_all"];
        for (name, v) in options {
            let path = format!("executor.{name}");
            match (k, name.as_str()) {
                (ExecutorKind::Slurm, "poll") => match v.as_f64() {
                    Some(x) if x > 0.0 && x.is_finite() => s.poll = Some(x),
                    _ => {
                        return Err((
                            path,
                            format!("`poll` must be a positive number of seconds, found {v}"),
                            "e.g. `poll: 10` on a busy cluster".into(),
                        ))
                    }
                },
                (ExecutorKind::Slurm, "submit_all") => match v.as_bool() {
                    Some(b) => s.submit_all = b,
                    None => {
                        return Err((
                            path,
                            format!("`submit_all` must be true or false, found {v}"),
                            "e.g. `submit_all: true`".into(),
                        ))
                    }
                },
                (ExecutorKind::Slurm, _) => {
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
