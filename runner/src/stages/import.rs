//! Stage `import`: the model source (the embedded default, an HF directory, a `.gguf` file,
//! local or in object storage) becomes the job's canonical HF directory, stored in the
//! requested dtype. Loading it once here proves every later stage can.

use crate::loader::{open_model, resolve_hf_dir, save_hf_dir};
use crate::model::safetensors_io::SaveDtype;
use crate::resolve::Resolver;
use crate::stages::{Outcome, Result, StageContext, StageError};
use pruneforge_api::contract::{self, StageSummary};
pub use pruneforge_api::params::ImportParams;
use pruneforge_api::spec::model::EMBEDDED_SOURCE;
use pruneforge_api::spec::{DType, ModelFormat};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImportSummary {
    pub source: String,
    pub architecture: String,
    pub layers: usize,
    pub parameters: u64,
    pub dtype: String,
}

/// A local path for `source`: the embedded default, or whatever the resolver makes of a
/// path or URI (object storage is downloaded; a committed HF directory is verified).
fn localize(source: &str, resolver: &Resolver) -> Result<PathBuf> {
    if source == EMBEDDED_SOURCE {
        return crate::loader::embedded::ensure_hf_dir()
            .map_err(|e| StageError::Input(e.to_string()));
    }
    Ok(resolver.resolve(source)?)
}

/// The stage contract's `import`: the model source into the artifact.
pub fn run_request(p: &ImportParams, ctx: &StageContext) -> Result<Outcome> {
    let s = run(p, ctx.resolver, ctx.out)?;
    Ok(Outcome::new(
        StageSummary::Import(contract::ImportSummary {
            layers: s.layers as u32,
            parameters: s.parameters,
        }),
        &["config.json", "model.safetensors", "tokenizer.json"],
    ))
}

pub fn run(params: &ImportParams, resolver: &Resolver, out_dir: &Path) -> Result<ImportSummary> {
    let local = localize(&params.source, resolver)?;
    if params.format == ModelFormat::Hf && !local.is_dir() {
        return Err(StageError::Input(format!(
            "model.format is hf but {} is not a directory",
            local.display()
        )));
    }
    let dir = resolve_hf_dir(&local)?;
    let m = open_model(&dir)?;
    let dtype = match params.dtype {
        DType::F32 => SaveDtype::F32,
        DType::Bf16 => SaveDtype::BF16,
        DType::F16 => SaveDtype::F16,
    };
    save_hf_dir(&m.model, &m.tokenizer, out_dir, dtype)?;
    Ok(ImportSummary {
        source: params.source.clone(),
        architecture: m.model.config.architecture.hf_class().into(),
        layers: m.model.num_layers(),
        parameters: m.model.config.parameter_count(),
        dtype: dtype.torch_name().into(),
    })
}
