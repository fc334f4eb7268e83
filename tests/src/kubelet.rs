//! A stand-in kubelet for clusters without nodes (`PRUNEFORGE_E2E_FAKE_KUBELET=1`).
//!
//! It lists the operator's pods in one namespace, and for every new pending pod runs the pod's
//! command locally: `pruneforge` is replaced by the runner binary, the request file under
//! `/etc/pruneforge/request` by a copy of the ConfigMap's `request.json`, the completion index
//! annotation becomes `JOB_COMPLETION_INDEX`, the storage Secret's keys are added to the
//! environment, and `PRUNEFORGE_TERMINATION_LOG` points at a local file. When the process
//! exits it patches the pod status the way a kubelet would (phase Succeeded/Failed and a
//! terminated `runner` container with exit code, reason and the termination message — or the
//! log tail for failures without one, as `FallbackToLogsOnError`), so the Job controller
//! finishes the Job and the operator cannot tell the difference.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::{watch, Semaphore};

/// Pod label selector of the operator's objects.
const SELECTOR: &str = "app.kubernetes.io/managed-by=pruneforge-operator";
/// Where stage pods read their request.
const REQUEST_DIR: &str = "/etc/pruneforge/request";
/// Kubernetes' termination message limit.
const MESSAGE_LIMIT: usize = 4096;

/// Errors of the fake kubelet.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    /// An API call failed.
    #[error("kubernetes api: {0}")]
    Kube(#[from] kube::Error),
    /// Local files.
    #[error("{path}: {source}")]
    Io {
        /// Path.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The pod cannot be run locally.
    #[error("pod {pod}: {message}")]
    Pod {
        /// Pod name.
        pod: String,
        /// Why.
        message: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KubeletError + '_ {
    move |source| KubeletError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Settings of the fake kubelet.
#[derive(Clone, Debug)]
pub struct KubeletConfig {
    /// Runner binary replacing `pruneforge`.
    pub runner_bin: PathBuf,
    /// `PRUNEFORGE_DATA_DIR` of local runs.
    pub data_dir: PathBuf,
    /// Scratch directory (one sub-directory per pod).
    pub work_dir: PathBuf,
    /// Pods run at once.
    pub parallel: usize,
    /// Poll interval.
    pub poll: Duration,
    /// Variables added to every pod's environment (what a test would set in the image).
    pub extra_env: BTreeMap<String, String>,
}

/// What happened to one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRun {
    /// Pod name.
    pub pod: String,
    /// Exit code.
    pub exit_code: i32,
    /// Termination message.
    pub message: String,
}

/// The stand-in kubelet of one namespace.
pub struct FakeKubelet {
    client: Client,
    namespace: String,
    config: KubeletConfig,
}

impl FakeKubelet {
    /// A kubelet for `namespace`.
    pub fn new(client: Client, namespace: impl Into<String>, config: KubeletConfig) -> Self {
        FakeKubelet {
            client,
            namespace: namespace.into(),
            config,
        }
    }

    /// Runs pods until `stop` is true; returns what it ran.
    pub async fn run(self, mut stop: watch::Receiver<bool>) -> Result<Vec<PodRun>, KubeletError> {
        let this = Arc::new(self);
        let pods: Api<Pod> = Api::namespaced(this.client.clone(), &this.namespace);
        let permits = Arc::new(Semaphore::new(this.config.parallel.max(1)));
        let mut seen: HashSet<String> = HashSet::new();
        let mut tasks = tokio::task::JoinSet::new();
        let mut runs = Vec::new();
        loop {
            for pod in pods
                .list(&ListParams::default().labels(SELECTOR))
                .await?
                .items
            {
                let name = pod.name_any();
                let pending = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.phase.as_deref())
                    .is_none_or(|p| p == "Pending");
                // (pods it marked Running are in `seen`)
                if !pending || pod.metadata.deletion_timestamp.is_some() || seen.contains(&name) {
                    continue;
                }
                seen.insert(name);
                let this = this.clone();
                let permits = permits.clone();
                tasks.spawn(async move {
                    let _permit = permits.acquire_owned().await;
                    this.run_pod(pod).await
                });
            }
            while let Some(done) = tasks.try_join_next() {
                match done {
                    Ok(Ok(run)) => runs.push(run),
                    Ok(Err(e)) => eprintln!("fake kubelet: {e}"),
                    Err(e) => eprintln!("fake kubelet task: {e}"),
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self_poll(&this)) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        tasks.shutdown().await;
        Ok(runs)
    }

    /// Runs one pod to its end and writes its status.
    pub async fn run_pod(&self, pod: Pod) -> Result<PodRun, KubeletError> {
        let name = pod.name_any();
        let fail = |message: String| KubeletError::Pod {
            pod: name.clone(),
            message,
        };
        let spec = pod.spec.clone().ok_or_else(|| fail("no spec".into()))?;
        let container = spec
            .containers
            .iter()
            .find(|c| c.name == "runner")
            .ok_or_else(|| fail("no runner container".into()))?;
        let command = container.command.clone().unwrap_or_default();
        let (first, args) = command
            .split_first()
            .ok_or_else(|| fail("empty command".into()))?;
        if first != "pruneforge" {
            return Err(fail(format!("command {first:?} is not the runner")));
        }

        let dir = self.config.work_dir.join(&name);
        for sub in ["home", "work", "request"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(io(&dir))?;
        }
        // The request ConfigMap.
        let mut args: Vec<String> = args.to_vec();
        if let Some(cm_name) = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "request")
            .and_then(|v| v.config_map.as_ref())
            .map(|c| c.name.clone())
        {
            let cms: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
            let cm = cms.get(&cm_name).await?;
            for (key, value) in cm.data.unwrap_or_default() {
                let path = dir.join("request").join(&key);
                std::fs::write(&path, value).map_err(io(&path))?;
            }
            for a in &mut args {
                if let Some(rest) = a.strip_prefix(REQUEST_DIR) {
                    *a = format!("{}{rest}", dir.join("request").display());
                }
            }
        }

        let mut env: BTreeMap<String, String> = BTreeMap::new();
        for e in container.env.iter().flatten() {
            if let Some(v) = &e.value {
                env.insert(e.name.clone(), v.clone());
            }
        }
        for from in container.env_from.iter().flatten() {
            if let Some(secret) = &from.secret_ref {
                let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
                if let Some(s) = secrets.get_opt(&secret.name).await? {
                    for (k, v) in s.data.unwrap_or_default() {
                        env.insert(k, String::from_utf8_lossy(&v.0).into_owned());
                    }
                }
            }
        }
        let termination_log = dir.join("termination-log");
        env.insert(
            "PRUNEFORGE_DATA_DIR".into(),
            self.config.data_dir.display().to_string(),
        );
        env.insert("HOME".into(), dir.join("home").display().to_string());
        env.insert("TMPDIR".into(), dir.join("home").display().to_string());
        env.insert(
            "PRUNEFORGE_TERMINATION_LOG".into(),
            termination_log.display().to_string(),
        );
        if let Some(index) = pod
            .annotations()
            .get("batch.kubernetes.io/job-completion-index")
        {
            env.insert("JOB_COMPLETION_INDEX".into(), index.clone());
        }
        if let Ok(path) = std::env::var("PATH") {
            env.insert("PATH".into(), path);
        }

        let started = Timestamp::now();
        // Like a kubelet: the pod is bound and running before the container starts. A cluster
        // that refuses this patch still gets the final one.
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let running = json!({"status": {
            "phase": "Running",
            "startTime": started.to_string(),
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": started.to_string()},
                {"type": "Initialized", "status": "True", "lastTransitionTime": started.to_string()},
            ],
            "containerStatuses": [{
                "name": "runner",
                "image": container.image.clone().unwrap_or_default(),
                "imageID": "",
                "ready": true,
                "restartCount": 0,
                "started": true,
                "state": {"running": {"startedAt": started.to_string()}},
            }],
        }});
        if let Err(e) = pods
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&running))
            .await
        {
            eprintln!("fake kubelet: marking pod {name} running: {e}");
        }
        env.extend(self.config.extra_env.clone());
        let mut child = tokio::process::Command::new(&self.config.runner_bin)
            .args(&args)
            .env_clear()
            .envs(&env)
            .current_dir(dir.join("work"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(io(&self.config.runner_bin))?;
        let stdout = child.stdout.take().map(read_all);
        let stderr = child.stderr.take().map(read_all);
        // Like a kubelet, kill the container when its pod is deleted.
        let status = loop {
            tokio::select! {
                status = child.wait() => break status.map_err(io(&self.config.runner_bin))?,
                _ = tokio::time::sleep(self.config.poll) => {
                    let gone = match pods.get_opt(&name).await {
                        Ok(None) => true,
                        Ok(Some(p)) => p.metadata.deletion_timestamp.is_some(),
                        Err(_) => false,
                    };
                    if gone {
                        let _ = child.kill().await;
                        return Ok(PodRun {
                            pod: name,
                            exit_code: 128 + 9,
                            message: "killed: the pod was deleted".to_string(),
                        });
                    }
                }
            }
        };
        let output = std::process::Output {
            status,
            stdout: match stdout {
                Some(t) => t.await.unwrap_or_default(),
                None => Vec::new(),
            },
            stderr: match stderr {
                Some(t) => t.await.unwrap_or_default(),
                None => Vec::new(),
            },
        };
        let finished = Timestamp::now();
        let exit_code = output.status.code().unwrap_or(128 + 9);
        let mut message = std::fs::read_to_string(&termination_log).unwrap_or_default();
        if message.trim().is_empty() && exit_code != 0 {
            // FallbackToLogsOnError: the tail of the log.
            let mut log = String::from_utf8_lossy(&output.stdout).into_owned();
            log.push_str(&String::from_utf8_lossy(&output.stderr));
            message = tail(&log, MESSAGE_LIMIT);
        }
        let message = tail(&message, MESSAGE_LIMIT);
        let status = json!({"status": {
            "phase": if exit_code == 0 { "Succeeded" } else { "Failed" },
            "containerStatuses": [{
                "name": "runner",
                "image": container.image.clone().unwrap_or_default(),
                "imageID": "",
                "ready": false,
                "restartCount": 0,
                "started": false,
                "state": {"terminated": {
                    "exitCode": exit_code,
                    "reason": if exit_code == 0 { "Completed" } else { "Error" },
                    "message": message,
                    "startedAt": started.to_string(),
                    "finishedAt": finished.to_string(),
                }},
            }],
        }});
        pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
        Ok(PodRun {
            pod: name,
            exit_code,
            message,
        })
    }
}

/// Reads a child's pipe to the end on a task (so a chatty child never blocks on a full pipe).
fn read_all<R>(mut pipe: R) -> tokio::task::JoinHandle<Vec<u8>>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut pipe, &mut buf).await;
        buf
    })
}

fn self_poll(k: &FakeKubelet) -> Duration {
    k.config.poll
}

/// The last `max` bytes of `s` (at a character boundary).
fn tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].to_string()
}
