//! What a stage asks of a cluster: CPUs, memory, time, GPUs, partition, account, QoS and any
//! extra `sbatch` flags. Resources are not part of any key: the same stage on a bigger node
//! gives the same result.
//!
//! A stage's resources are its kind's defaults, overridden by the pipeline's `resources:`,
//! overridden by the stage's own `resources:`.

use serde::{Deserialize, Serialize};

/// What a stage asks of a cluster (`--executor slurm`). Not part of the key. Stage values override
/// the pipeline's, which override the kind's defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPUs per task (`--cpus-per-task`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub cpus: Option<u32>,
    /// Memory per node (`--mem`), e.g. `2G`, `500M`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^[0-9]+[KMGTkmgt]?$"))]
    pub mem: Option<String>,
    /// Time limit (`--time`), e.g. `30` (minutes), `4:00:00`, `1-00:00:00`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "string_or_number"
    )]
    #[schemars(schema_with = "time_schema")]
    pub time: Option<String>,
    /// GPUs (`--gpus`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos: Option<String>,
    /// Further `sbatch` flags, passed as they are, e.g. `["--constraint=avx512"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(pattern = "^-")))]
    pub extra: Vec<String>,
}

/// `time: 30` and `time: "30"` are the same limit.
fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a time limit: minutes, e.g. `30`, or a string such as \"4:00:00\"")
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
            Ok(Some(s.to_string()))
        }
        fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Self::Value, E> {
            Ok(Some(n.to_string()))
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(V)
}

fn time_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "Time limit (--time): minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS.",
        "anyOf": [
            { "type": "integer", "minimum": 0 },
            { "type": "string", "pattern": "^([0-9]{1,4}-)?[0-9]{1,4}(:[0-9]{1,4}){0,2}$" },
        ],
    })
}

impl Resources {
    /// Defaults by kind: stages that compute on a device (models, training) get a CPU per
    /// matrix-product thread, 4G and 4 hours; the others (text, tables, plots) 1 CPU, 1G, 30
    /// minutes.
    pub fn defaults(uses_device: bool, threads: usize) -> Resources {
        if uses_device {
            Resources {
                cpus: Some(threads.max(1) as u32),
                mem: Some("4G".into()),
                time: Some("4:00:00".into()),
                ..Default::default()
            }
        } else {
            Resources {
                cpus: Some(1),
                mem: Some("1G".into()),
                time: Some("30:00".into()),
                ..Default::default()
            }
        }
    }

    /// `self` with every field that `over` sets replaced; `extra` flags are appended.
    pub fn overridden_by(&self, over: &Resources) -> Resources {
        let mut r = self.clone();
        macro_rules! take {
            ($($f:ident),*) => { $( if over.$f.is_some() { r.$f = over.$f.clone(); } )* };
        }
        take!(cpus, mem, time, gpus, partition, account, qos);
        r.extra.extend(over.extra.iter().cloned());
        r
    }

    /// Problems with the values: (field, message, help).
    pub fn check(&self) -> Vec<(&'static str, String, String)> {
        let mut out = Vec::new();
        if self.cpus == Some(0) {
            out.push((
                "cpus",
                "`cpus` must be at least 1".into(),
                "e.g. `cpus: 2`".into(),
            ));
        }
        if let Some(m) = &self.mem {
            if !valid_mem(m) {
                out.push((
                    "mem",
                    format!("`mem: {m}` is not a Slurm memory size"),
                    "a number with an optional unit K, M, G or T, e.g. `mem: 2G`".into(),
                ));
            }
        }
        if let Some(t) = &self.time {
            if !valid_time(t) {
                out.push((
                    "time",
                    format!("`time: {t}` is not a Slurm time limit"),
                    "minutes, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM` or `D-HH:MM:SS`, e.g. `time: 4:00:00` (quote it in YAML)".into(),
                ));
            }
        }
        for e in &self.extra {
            if !e.starts_with('-') {
                out.push((
                    "extra",
                    format!("`{e}` in `extra` is not an sbatch flag"),
                    "write flags as sbatch takes them, e.g. `extra: [\"--constraint=avx512\"]`"
                        .into(),
                ));
            }
        }
        out
    }

    /// The `sbatch` flags.
    pub fn sbatch_args(&self) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(c) = self.cpus {
            a.push(format!("--cpus-per-task={c}"));
        }
        if let Some(m) = &self.mem {
            a.push(format!("--mem={m}"));
        }
        if let Some(t) = &self.time {
            a.push(format!("--time={t}"));
        }
        if let Some(g) = self.gpus {
            a.push(format!("--gpus={g}"));
        }
        if let Some(p) = &self.partition {
            a.push(format!("--partition={p}"));
        }
        if let Some(x) = &self.account {
            a.push(format!("--account={x}"));
        }
        if let Some(q) = &self.qos {
            a.push(format!("--qos={q}"));
        }
        a.extend(self.extra.iter().cloned());
        a
    }

    /// "cpus 1, mem 4G, time 4:00:00" for progress lines.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(c) = self.cpus {
            parts.push(format!("cpus {c}"));
        }
        if let Some(m) = &self.mem {
            parts.push(format!("mem {m}"));
        }
        if let Some(t) = &self.time {
            parts.push(format!("time {t}"));
        }
        if let Some(g) = self.gpus {
            parts.push(format!("gpus {g}"));
        }
        if let Some(p) = &self.partition {
            parts.push(format!("partition {p}"));
        }
        parts.join(", ")
    }
}

fn valid_mem(m: &str) -> bool {
    let digits = m.trim_end_matches(['K', 'M', 'G', 'T', 'k', 'm', 'g', 't']);
    !digits.is_empty() && digits.len() + 1 >= m.len() && digits.chars().all(|c| c.is_ascii_digit())
}

fn valid_time(t: &str) -> bool {
    let num = |s: &str| !s.is_empty() && s.len() <= 4 && s.chars().all(|c| c.is_ascii_digit());
    let (days, rest) = match t.split_once('-') {
        Some((d, r)) => (Some(d), r),
        None => (None, t),
    };
    if days.is_some_and(|d| !num(d)) {
        return false;
    }
    let parts: Vec<&str> = rest.split(':').collect();
    parts.iter().all(|p| num(p))
        && match days {
            None => (1..=3).contains(&parts.len()),
            Some(_) => (1..=3).contains(&parts.len()),
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked_and_become_sbatch_flags() {
        for ok in ["30", "30:00", "4:00:00", "1-00", "1-00:00:00"] {
            assert!(valid_time(ok), "{ok}");
        }
        for bad in ["", "4h", "1:2:3:4", "-1", "a-1"] {
            assert!(!valid_time(bad), "{bad}");
        }
        assert!(valid_mem("2G") && valid_mem("500") && !valid_mem("2GB") && !valid_mem("G"));
        let d = Resources::defaults(true, 2);
        let r = d.overridden_by(&Resources {
            mem: Some("8G".into()),
            partition: Some("gpu".into()),
            extra: vec!["--constraint=avx512".into()],
            ..Default::default()
        });
        assert_eq!(
            r.sbatch_args(),
            [
                "--cpus-per-task=2",
                "--mem=8G",
                "--time=4:00:00",
                "--partition=gpu",
                "--constraint=avx512"
            ]
        );
        let bad = Resources {
            cpus: Some(0),
            mem: Some("lots".into()),
            extra: vec!["constraint".into()],
            ..Default::default()
        };
        let fields: Vec<&str> = bad.check().iter().map(|c| c.0).collect();
        assert_eq!(fields, ["cpus", "mem", "extra"]);
    }
}
