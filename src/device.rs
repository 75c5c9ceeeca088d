//! Where model stages compute: one type from the pipeline file (after `auto` is resolved) and
//! the CLI down to the tensors in `nn`. A leaf module.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Device {
    Cpu,
    /// Needs a build with the `cuda` feature.
    Cuda,
}

impl Device {
    pub fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
        }
    }

    /// An error when this build cannot use the device.
    pub fn check_built(self) -> Result<(), String> {
        if self == Self::Cuda && !cfg!(feature = "cuda") {
            return Err("device `cuda` needs a build with the `cuda` feature (scripts/build-cuda.sh); use `--device cpu`".into());
        }
        Ok(())
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
