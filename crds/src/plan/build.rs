//! `plan(spec)`: check the spec and lay out the stage DAG.

use std::collections::{BTreeMap, BTreeSet};

use super::id::variant;
use super::key::{artifact_uri, cache_key};
use super::{Plan, PlanError, Shape, StageId, StageInstance};
use crate::params::{
    DistillParams, EvalParams, FinetuneParams, ImportParams, MergeParams, PreferParams,
    PreferencePairs, PruneParams, ScoreParams, SelfPlayParams, SpeculateParams, StageParams,
};
use crate::spec::{
    DistillDataset, DraftModel, LoraSpec, MergeAcross, MergeMethod, MergeSpec, PruneDistillJobSpec,
    RecoveryMethod, ResolvedCompute, TrainingData, TrainingRecipe, WidthVariant,
};

/// Builds the stage plan of a spec. Pure: equal specs give equal plans. Only the spec parts a
/// stage's output depends on enter its parameters and cache key; `runner`, `storage` (except
/// the artifact root), `maxParallelStages`, `model.name`, `distillation.shards` and
/// `recovery.checkpointEvery` change no key. The compute dtype does when it is not f32, and
/// `runner.gpu.count` decides what `compute: auto` means (bf16 on GPUs).
///
/// `spec.compute` is resolved for the pods' GPUs (`runner.gpu.count`), as the operator runs
/// it; see [`plan_for`] for a run that decides the device itself.
pub fn plan(spec: &PruneDistillJobSpec) -> Result<Plan, PlanError> {
    plan_for(spec, spec.compute.resolve(Some(spec.runner.gpu.count)))
}

/// [`plan`] with the device and dtype already resolved (a local run resolves `auto` against
/// the machine it runs on). A dtype other than f32 enters the keys of the model-computing
/// stages.
pub fn plan_for(spec: &PruneDistillJobSpec, compute: ResolvedCompute) -> Result<Plan, PlanError> {
    check(spec)?;
    let mut builder = Builder {
        root: spec.storage.root().to_string(),
        key_dtype: compute.key_dtype(),
        stages: Vec::new(),
    };

    // The pruned variants: one per depth block size, then one per width variant.
    let mut shapes: Vec<(Shape, Option<&WidthVariant>)> = spec
        .pruning
        .block_sizes
        .iter()
        .copied()
        .collect::<BTreeSet<u32>>()
        .into_iter()
        .map(|n| (Shape::depth(n), None))
        .collect();
    for w in &spec.pruning.widths {
        let shape = Shape {
            block_size: w.block_size.unwrap_or(0),
            width: Some(w.name.clone()),
        };
        shapes.push((shape, Some(w)));
    }
    // Every block size some variant removes, scored once.
    let block_sizes: Vec<u32> = shapes
        .iter()
        .map(|(s, _)| s.block_size)
        .filter(|&n| n > 0)
        .collect::<BTreeSet<u32>>()
        .into_iter()
        .collect();
    let width_importance = (!spec.pruning.widths.is_empty())
        .then(|| spec.pruning.width_importance.unwrap_or_default());
    let trained: Vec<RecoveryMethod> = spec
        .recovery
        .methods
        .iter()
        .copied()
        .filter(|m| *m != RecoveryMethod::None)
        .collect();

    // import
    let import = builder.add(
        StageId::import(),
        StageParams::Import(ImportParams {
            source: spec.model.source.clone(),
            format: spec.model.format,
            dtype: spec.model.dtype,
        }),
        &[],
        1,
    );

    // score
    let score = builder.add(
        StageId::score(),
        StageParams::Score(ScoreParams {
            calibration: spec.calibration.clone(),
            metric: spec.pruning.metric,
            block_sizes: block_sizes.clone(),
            exclude_first_layer: spec.pruning.exclude_first_layer,
            exclude_last_layer: spec.pruning.exclude_last_layer,
            width: width_importance,
        }),
        &[("model", &import)],
        1,
    );

    // prune, one per variant
    let mut pruned: BTreeMap<Shape, StageId> = BTreeMap::new();
    for (shape, width) in &shapes {
        let mut inputs = vec![("model", &import)];
        if spec.pruning.start.is_none() || width.is_some() {
            inputs.push(("scores", &score));
        }
        let id = builder.add(
            StageId::prune(shape),
            StageParams::Prune(PruneParams {
                block_size: shape.block_size,
                start: (shape.block_size > 0)
                    .then_some(spec.pruning.start)
                    .flatten(),
                width: width.map(|w| w.targets.clone()),
                width_variant: shape.width.clone(),
            }),
            &inputs,
            1,
        );
        pruned.insert(shape.clone(), id);
    }

    // teacher correction: the unpruned model fine-tuned on the original answers, the teacher
    // of KD and the rewriter of self-data distillation from here on
    let needs_distilled = trained
        .iter()
        .any(|m| m.training_data() == Some(TrainingData::Distilled));
    let corrected = spec.recovery.teacher_correction.as_ref().map(|tc| {
        let mut optimizer = spec.recovery.optimizer.clone();
        if let Some(steps) = tc.steps {
            optimizer.steps = steps;
        }
        if let Some(lr) = tc.learning_rate {
            optimizer.learning_rate = lr;
        }
        builder.add(
            StageId::teacher_correction(),
            StageParams::Finetune(FinetuneParams {
                block_size: 0,
                width_variant: None,
                method: RecoveryMethod::Sft,
                recipe: TrainingRecipe {
                    data: TrainingData::Original,
                    cross_entropy_weight: 1.0,
                    kd_weight: 0.0,
                },
                datasets: spec.distillation.datasets.clone(),
                lora: spec.recovery.lora.clone(),
                optimizer,
                kd_temperature: None,
                kd_hidden_states: None,
                train_limit: spec.recovery.train_limit,
                teacher_correction: true,
                checkpoint_every: spec.recovery.checkpoint_every,
            }),
            &[("model", &import)],
            1,
        )
    });
    let teacher = corrected.as_ref().unwrap_or(&import);

    // distill, one per data set, only when some method trains on distilled answers
    let mut distilled: Vec<(String, StageId)> = Vec::new();
    if needs_distilled {
        for dataset in &spec.distillation.datasets {
            let id = builder.add(
                StageId::distill(&dataset.name),
                StageParams::Distill(DistillParams {
                    dataset: dataset.clone(),
                    template: spec.distillation.template.clone(),
                    answer_check: spec.distillation.answer_check.clone(),
                    generation: spec.distillation.generation.clone(),
                }),
                &[("model", teacher)],
                spec.distillation.shards,
            );
            distilled.push((format!("data-{}", dataset.name), id));
        }
    }

    // finetune, one per variant and trained method
    let mut finetuned: BTreeMap<(Shape, RecoveryMethod), StageId> = BTreeMap::new();
    for (shape, _) in &shapes {
        for &method in &trained {
            let Some(recipe) = method.recipe(spec.recovery.kd.ratio) else {
                continue;
            };
            let mut inputs: Vec<(&str, &StageId)> = vec![("model", &pruned[shape])];
            if recipe.needs_teacher() {
                inputs.push(("teacher", teacher));
            }
            let datasets: Vec<DistillDataset> = match recipe.data {
                TrainingData::Original => spec.distillation.datasets.clone(),
                TrainingData::Distilled => {
                    for (name, id) in &distilled {
                        inputs.push((name.as_str(), id));
                    }
                    Vec::new()
                }
            };
            let id = builder.add(
                StageId::finetune(shape, method),
                StageParams::Finetune(FinetuneParams {
                    block_size: shape.block_size,
                    width_variant: shape.width.clone(),
                    method,
                    recipe,
                    datasets,
                    lora: spec.recovery.lora.clone(),
                    optimizer: spec.recovery.optimizer.clone(),
                    kd_temperature: recipe
                        .needs_teacher()
                        .then_some(spec.recovery.kd.temperature),
                    kd_hidden_states: recipe
                        .needs_teacher()
                        .then(|| spec.recovery.kd.hidden_states.clone())
                        .flatten(),
                    teacher_correction: false,
                    train_limit: spec.recovery.train_limit,
                    checkpoint_every: spec.recovery.checkpoint_every,
                }),
                &inputs,
                1,
            );
            finetuned.insert((shape.clone(), method), id);
        }
    }
    // the noise-floor controls: the sft arm with other seeds
    let mut controls: BTreeMap<(Shape, u32), StageId> = BTreeMap::new();
    for (shape, _) in &shapes {
        for &seed in &spec.recovery.control_seeds {
            // The sft arm's settings but for the seed (validated: sft is among the methods).
            let Some(StageParams::Finetune(mut params)) = finetuned
                .get(&(shape.clone(), RecoveryMethod::Sft))
                .and_then(|sft| builder.params(sft))
                .cloned()
            else {
                continue;
            };
            params.optimizer.seed = seed;
            let id = builder.add(
                StageId::finetune_control(shape, seed),
                StageParams::Finetune(params),
                &[("model", &pruned[shape])],
                1,
            );
            controls.insert((shape.clone(), seed), id);
        }
    }

    // merge.across: datasets — the merged method fine-tuned once per data set, on it alone
    let mut per_dataset: BTreeMap<Shape, Vec<(String, StageId)>> = BTreeMap::new();
    if spec.merge.enabled && spec.merge.across == MergeAcross::Datasets {
        let method = spec.merge.models[0];
        for (shape, _) in &shapes {
            let Some(StageParams::Finetune(pooled)) = finetuned
                .get(&(shape.clone(), method))
                .and_then(|id| builder.params(id))
                .cloned()
            else {
                continue;
            };
            for dataset in &spec.distillation.datasets {
                let mut params = pooled.clone();
                let data_input = format!("data-{}", dataset.name);
                let mut inputs: Vec<(&str, &StageId)> = vec![("model", &pruned[shape])];
                if params.recipe.needs_teacher() {
                    inputs.push(("teacher", teacher));
                }
                match params.recipe.data {
                    TrainingData::Original => params.datasets = vec![dataset.clone()],
                    TrainingData::Distilled => {
                        for (name, id) in distilled.iter().filter(|(n, _)| *n == data_input) {
                            inputs.push((name.as_str(), id));
                        }
                    }
                }
                let id = builder.add(
                    StageId::finetune_on(shape, method, &dataset.name),
                    StageParams::Finetune(params),
                    &inputs,
                    1,
                );
                per_dataset
                    .entry(shape.clone())
                    .or_default()
                    .push((dataset.name.clone(), id));
            }
        }
    }

    // preference stages after the chosen fine-tunes: DPO, and SPIN's iterations in a chain
    let mut preferred: Vec<(Shape, String, StageId)> = Vec::new();
    if let Some(pref) = &spec.recovery.preference {
        let mut optimizer = spec.recovery.optimizer.clone();
        if let Some(steps) = pref.steps {
            optimizer.steps = steps;
            optimizer.warmup_steps = optimizer.warmup_steps.min(steps);
        }
        if let Some(lr) = pref.learning_rate {
            optimizer.learning_rate = lr;
        }
        for (shape, _) in &shapes {
            for &method in &pref.after {
                let start = &finetuned[&(shape.clone(), method)];
                let params = |pairs: PreferencePairs, beta: f64, loss, label_smoothing| {
                    StageParams::Prefer(PreferParams {
                        block_size: shape.block_size,
                        width_variant: shape.width.clone(),
                        after: method,
                        pairs,
                        beta,
                        loss,
                        label_smoothing,
                        // QLoRA applies to the fine-tunes only: a preference stage starts
                        // from a merged fine-tune, and quantizing that again would round
                        // away most of its adapter (docs/qlora.md).
                        lora: LoraSpec {
                            base_quantization: None,
                            ..spec.recovery.lora.clone()
                        },
                        optimizer: optimizer.clone(),
                        checkpoint_every: spec.recovery.checkpoint_every,
                    })
                };
                if let Some(dpo) = &pref.dpo {
                    let suffix = "dpo";
                    let id = builder.add(
                        StageId::prefer(shape, method, suffix),
                        params(
                            PreferencePairs::Dataset {
                                dataset: dpo.dataset.clone(),
                            },
                            dpo.beta,
                            dpo.loss,
                            dpo.label_smoothing,
                        ),
                        &[("model", start)],
                        1,
                    );
                    preferred.push((shape.clone(), variant::preferred(shape, method, suffix), id));
                }
                if let Some(spin) = &pref.spin {
                    let mut previous = start.clone();
                    for iteration in 1..=spin.iterations {
                        let suffix = format!("spin{iteration}");
                        // The generation, sharded like distill; then the training on its pairs.
                        let answers = builder.add(
                            StageId::self_play(shape, method, &suffix),
                            StageParams::SelfPlay(SelfPlayParams {
                                block_size: shape.block_size,
                                width_variant: shape.width.clone(),
                                after: method,
                                iteration,
                                datasets: spec.distillation.datasets.clone(),
                                generation: spec.distillation.generation.clone(),
                                prompts: spin.prompts.or(spec.recovery.train_limit),
                            }),
                            &[("model", &previous)],
                            spec.distillation.shards,
                        );
                        let id = builder.add(
                            StageId::prefer(shape, method, &suffix),
                            params(
                                PreferencePairs::SelfPlay { iteration },
                                spin.beta,
                                spin.loss,
                                0.0,
                            ),
                            &[("model", &previous), ("pairs", &answers)],
                            1,
                        );
                        preferred.push((
                            shape.clone(),
                            variant::preferred(shape, method, &suffix),
                            id.clone(),
                        ));
                        previous = id;
                    }
                }
            }
        }
    }

    // merge, one per variant
    let mut merged: BTreeMap<Shape, StageId> = BTreeMap::new();
    if spec.merge.enabled {
        for (shape, _) in &shapes {
            // The merged fine-tunes, in order: one per method, or one per data set.
            let (sources, models, datasets): (Vec<&StageId>, Vec<RecoveryMethod>, Vec<String>) =
                match per_dataset.get(shape) {
                    Some(runs) => (
                        runs.iter().map(|(_, id)| id).collect(),
                        vec![spec.merge.models[0]; runs.len()],
                        runs.iter().map(|(name, _)| name.clone()).collect(),
                    ),
                    None => (
                        spec.merge
                            .models
                            .iter()
                            .map(|m| &finetuned[&(shape.clone(), *m)])
                            .collect(),
                        spec.merge.models.clone(),
                        Vec::new(),
                    ),
                };
            let names: Vec<String> = (0..sources.len()).map(|i| format!("model-{i}")).collect();
            let mut inputs: Vec<(&str, &StageId)> = vec![("base", &pruned[shape])];
            for (name, id) in names.iter().zip(&sources) {
                inputs.push((name.as_str(), *id));
            }
            let id = builder.add(
                StageId::merge(shape),
                StageParams::Merge(MergeParams {
                    block_size: shape.block_size,
                    width_variant: shape.width.clone(),
                    method: spec.merge.method,
                    t: spec.merge.t,
                    t_gradient: spec.merge.t_gradient.clone(),
                    models,
                    datasets,
                    weights: spec.merge.weights.clone(),
                    density: spec.merge.density,
                    lambda: spec.merge.lambda,
                    // Only a setting that differs from the method's default enters the key.
                    normalize: spec
                        .merge
                        .normalize
                        .filter(|n| Some(*n) != spec.merge.method.default_normalize()),
                }),
                &inputs,
                1,
            );
            merged.insert(shape.clone(), id);
        }
    }

    // eval: base, then per variant the pruned, fine-tuned and merged models
    let mut tasks = spec.evaluation.tasks.clone();
    tasks.sort_by_key(|t| t.name);
    if let Some(preset) = spec.evaluation.preset {
        for t in tasks.iter_mut().filter(|t| t.shots.is_none()) {
            t.shots = preset.shots(t.name);
        }
    }
    let eval_params = |drift: bool| {
        StageParams::Eval(EvalParams {
            tasks: tasks.clone(),
            seed: spec.evaluation.seed,
            batch_size: spec.evaluation.batch_size,
            drift: (drift && spec.evaluation.drift.enabled).then(|| spec.evaluation.drift.clone()),
        })
    };
    let drift = spec.evaluation.drift.enabled;
    let base_eval = StageId::eval(variant::BASE);
    // With drift on, the base eval also writes the base model's responses, which every
    // variant's eval reuses.
    builder.add(
        base_eval.clone(),
        eval_params(true),
        &[("model", &import)],
        1,
    );
    for (shape, _) in &shapes {
        let mut models: Vec<(String, &StageId)> = Vec::new();
        if spec.recovery.methods.contains(&RecoveryMethod::None) {
            models.push((variant::pruned(shape), &pruned[shape]));
        }
        for &method in &trained {
            models.push((
                variant::finetuned(shape, method),
                &finetuned[&(shape.clone(), method)],
            ));
        }
        for &seed in &spec.recovery.control_seeds {
            if let Some(id) = controls.get(&(shape.clone(), seed)) {
                models.push((variant::control(shape, seed), id));
            }
        }
        for (dataset, id) in per_dataset.get(shape).into_iter().flatten() {
            models.push((
                variant::finetuned_on(shape, spec.merge.models[0], dataset),
                id,
            ));
        }
        for (_, name, id) in preferred.iter().filter(|(s, _, _)| s == shape) {
            models.push((name.clone(), id));
        }
        if let Some(id) = merged.get(shape) {
            models.push((variant::merged(shape), id));
        }
        for (name, model) in models {
            // The base model's results give each variant its recovery %.
            let mut inputs = vec![("model", model), ("base-eval", &base_eval)];
            if drift {
                inputs.push(("base", &import));
            }
            builder.add(StageId::eval(&name), eval_params(true), &inputs, 1);
        }
    }

    // speculate, one per variant
    if spec.speculative.enabled {
        let s = &spec.speculative;
        let params = |shape: Option<&Shape>| {
            StageParams::Speculate(SpeculateParams {
                block_size: shape.map_or(0, |x| x.block_size),
                width_variant: shape.and_then(|x| x.width.clone()),
                draft: s.draft,
                draft_tokens: s.draft_tokens,
                max_new_tokens: s.max_new_tokens,
                temperature: s.temperature,
                prompts: s.prompts.clone(),
                seed: s.seed,
            })
        };
        if s.draft == DraftModel::Int8 {
            // The base drafts for itself: one stage, whatever the pruned shapes.
            builder.add(
                StageId::speculate_int8(),
                params(None),
                &[("target", &import), ("draft", &import)],
                1,
            );
        }
        for (shape, _) in &shapes {
            let draft = match s.draft {
                DraftModel::Pruned => &pruned[shape],
                DraftModel::Merged => &merged[shape],
                DraftModel::Int8 => continue,
            };
            builder.add(
                StageId::speculate(shape),
                params(Some(shape)),
                &[("target", &import), ("draft", draft)],
                1,
            );
        }
    }

    Ok(Plan::new(
        builder.root,
        spec.max_parallel_stages.max(1),
        compute,
        builder.stages,
    ))
}

struct Builder {
    root: String,
    key_dtype: Option<&'static str>,
    stages: Vec<StageInstance>,
}

impl Builder {
    /// The parameters of a stage already in the plan.
    fn params(&self, id: &StageId) -> Option<&StageParams> {
        self.stages.iter().find(|s| &s.id == id).map(|s| &s.params)
    }

    /// Appends a stage whose inputs are already in the plan (so the order stays topological) and
    /// returns its id.
    fn add(
        &mut self,
        id: StageId,
        params: StageParams,
        inputs: &[(&str, &StageId)],
        shards: u32,
    ) -> StageId {
        let inputs: BTreeMap<String, StageId> = inputs
            .iter()
            .map(|(name, id)| (name.to_string(), (*id).clone()))
            .collect();
        let input_keys: BTreeMap<String, String> = inputs
            .iter()
            .map(|(name, dep)| {
                let key = self
                    .stages
                    .iter()
                    .find(|s| &s.id == dep)
                    .map(|s| s.key.clone())
                    // Unreachable: `add` is only called with ids it returned earlier.
                    .unwrap_or_default();
                (name.clone(), key)
            })
            .collect();
        let key = cache_key(&params, &input_keys, self.key_dtype);
        let artifact_uri = artifact_uri(&self.root, params.kind(), &key);
        self.stages.push(StageInstance {
            id: id.clone(),
            params,
            inputs,
            key,
            artifact_uri,
            shards: shards.max(1),
        });
        id
    }
}

/// Checks what the planner relies on. The CRD's schema and CEL rules reject the same specs in a
/// cluster; this keeps local runs (no apiserver) just as strict.
fn check(spec: &PruneDistillJobSpec) -> Result<(), PlanError> {
    let sizes = &spec.pruning.block_sizes;
    if sizes.is_empty() && spec.pruning.widths.is_empty() {
        return Err(PlanError::NoBlockSizes);
    }
    let mut width_names = BTreeSet::new();
    for (index, w) in spec.pruning.widths.iter().enumerate() {
        let invalid = |reason: String| PlanError::InvalidWidthVariant { index, reason };
        if !is_label(&w.name, 20) {
            return Err(invalid(format!(
                "name {:?} must be 1-20 lowercase letters, digits or '-', starting and ending with a letter or digit",
                w.name
            )));
        }
        let label = Shape {
            block_size: 0,
            width: Some(w.name.clone()),
        }
        .label();
        if variant::split(&label) != Some((label.as_str(), "")) {
            return Err(invalid(format!(
                "name {:?} must not end in a recovery method's name (`sft`, `logit-kd`, `merged`, `sft-seed<n>`, ...), which name the recovered variants",
                w.name
            )));
        }
        if !width_names.insert(w.name.as_str()) {
            return Err(invalid(format!("name {:?} is used twice", w.name)));
        }
        if w.targets.is_empty() {
            return Err(invalid(
                "no target width; give intermediateSize, numKeyValueHeads, headsPerGroup or hiddenSize".into(),
            ));
        }
        w.targets.check().map_err(invalid)?;
        if w.block_size == Some(0) {
            return Err(invalid(
                "blockSize must be at least 1 (leave it out for width pruning only)".into(),
            ));
        }
    }
    let mut seen = BTreeSet::new();
    for &n in sizes {
        if n == 0 {
            return Err(PlanError::ZeroBlockSize);
        }
        if !seen.insert(n) {
            return Err(PlanError::DuplicateBlockSize(n));
        }
    }

    let methods = &spec.recovery.methods;
    if methods.is_empty() {
        return Err(PlanError::NoRecoveryMethods);
    }
    let mut seen = BTreeSet::new();
    for &m in methods {
        if !seen.insert(m) {
            return Err(PlanError::DuplicateRecoveryMethod(m));
        }
    }
    if spec.distillation.datasets.is_empty() {
        if let Some(&m) = methods.iter().find(|m| m.training_data().is_some()) {
            return Err(PlanError::MissingDatasets(m));
        }
    }
    let mut names = BTreeSet::new();
    for d in &spec.distillation.datasets {
        if !is_dataset_name(&d.name) {
            return Err(PlanError::InvalidDatasetName(d.name.clone()));
        }
        if !names.insert(d.name.as_str()) {
            return Err(PlanError::DuplicateDatasetName(d.name.clone()));
        }
    }
    if spec.distillation.shards == 0 {
        return Err(PlanError::ZeroShards);
    }
    // (Teacher correction's data is present: every method that would use it trains on data,
    // and a missing data set was refused above.)
    if spec.recovery.teacher_correction.is_some() {
        let used = methods.iter().any(|m| {
            m.recipe(spec.recovery.kd.ratio)
                .is_some_and(|r| r.needs_teacher() || r.data == TrainingData::Distilled)
        });
        if !used {
            return Err(PlanError::TeacherCorrectionUnused);
        }
    }
    if let Some(pref) = &spec.recovery.preference {
        check_preference(pref, methods)?;
    }
    let controls = &spec.recovery.control_seeds;
    if !controls.is_empty() && !methods.contains(&RecoveryMethod::Sft) {
        return Err(PlanError::ControlWithoutSft);
    }
    if let Some(&s) = controls
        .iter()
        .find(|&&s| s == spec.recovery.optimizer.seed)
    {
        return Err(PlanError::ControlSeedIsTheArmSeed(s));
    }

    if spec.merge.enabled {
        let models = &spec.merge.models;
        // The number of models the merge combines.
        let merged = match spec.merge.across {
            MergeAcross::Methods => models.len(),
            MergeAcross::Datasets => {
                let datasets = spec.distillation.datasets.len();
                if models.len() != 1 || datasets < 2 {
                    return Err(PlanError::MergeAcrossDatasets {
                        methods: models.len(),
                        datasets,
                    });
                }
                datasets
            }
        };
        if merged < 2 {
            return Err(PlanError::TooFewMergeModels(merged));
        }
        if spec.merge.method.needs_two_models() && merged != 2 {
            return Err(PlanError::MergeNeedsTwoModels {
                method: spec.merge.method,
                got: merged,
            });
        }
        let mut seen = BTreeSet::new();
        for &m in models {
            if m == RecoveryMethod::None || !methods.contains(&m) {
                return Err(PlanError::MergeModelNotTrained(m));
            }
            if !seen.insert(m) {
                return Err(PlanError::DuplicateMergeModel(m));
            }
        }
        if !(0.0..=1.0).contains(&spec.merge.t) {
            return Err(PlanError::MergeFactorOutOfRange {
                field: "t",
                value: spec.merge.t.to_string(),
            });
        }
        if let Some(v) = spec
            .merge
            .t_gradient
            .iter()
            .find(|v| !(0.0..=1.0).contains(*v))
        {
            return Err(PlanError::MergeFactorOutOfRange {
                field: "tGradient",
                value: v.to_string(),
            });
        }
        check_merge_settings(&spec.merge, merged)?;
    }
    if spec.speculative.enabled
        && spec.speculative.draft == DraftModel::Merged
        && !spec.merge.enabled
    {
        return Err(PlanError::MergedDraftWithoutMerge);
    }
    if let Some(q) = spec.recovery.lora.base_quantization {
        if spec.compute.device == crate::spec::ComputeDevice::Cuda {
            return Err(PlanError::QuantizedBaseOnGpu(q));
        }
    }

    let mut tasks = BTreeSet::new();
    for t in &spec.evaluation.tasks {
        if !tasks.insert(t.name) {
            return Err(PlanError::DuplicateEvalTask(t.name.as_str().to_string()));
        }
    }

    let uri = &spec.storage.uri;
    if !crate::uri::has_supported_scheme(uri) {
        return Err(PlanError::InvalidStorageUri(uri.clone()));
    }
    Ok(())
}

/// Preference stages: something to run, after fine-tunes this job trains, and settings each
/// loss can use (the CRD's CEL rules say the same in a cluster).
fn check_preference(
    pref: &crate::spec::PreferenceSpec,
    methods: &[RecoveryMethod],
) -> Result<(), PlanError> {
    use crate::spec::PreferenceLoss;
    let invalid = |m: &str| Err(PlanError::InvalidPreference(m.to_string()));
    if pref.dpo.is_none() && pref.spin.is_none() {
        return invalid("set dpo, spin or both");
    }
    if pref.after.is_empty() {
        return invalid(
            "after is empty; list the recovery methods whose fine-tunes continue, e.g. [sft]",
        );
    }
    let mut seen = BTreeSet::new();
    for &m in &pref.after {
        if m == RecoveryMethod::None || !methods.contains(&m) {
            return Err(PlanError::PreferenceAfterUntrained(m));
        }
        if !seen.insert(m) {
            return invalid(&format!("after lists {m} twice"));
        }
    }
    let beta_ok = |b: f64| b.is_finite() && b > 0.0 && b <= 100.0;
    if let Some(d) = &pref.dpo {
        if !beta_ok(d.beta) {
            return invalid(&format!(
                "dpo.beta must be greater than 0 and at most 100, got {}",
                d.beta
            ));
        }
        if !(0.0..=0.5).contains(&d.label_smoothing) {
            return invalid(&format!(
                "dpo.labelSmoothing must be between 0 and 0.5, got {}",
                d.label_smoothing
            ));
        }
        if d.loss == PreferenceLoss::Ipo && d.label_smoothing != 0.0 {
            return invalid("dpo.labelSmoothing applies to the sigmoid and hinge losses only");
        }
        if !crate::uri::has_supported_scheme(&d.dataset.uri) && d.dataset.uri.contains("://") {
            return invalid(&format!(
                "dpo.dataset.uri {:?} has an unsupported scheme",
                d.dataset.uri
            ));
        }
    }
    if let Some(s) = &pref.spin {
        if !beta_ok(s.beta) {
            return invalid(&format!(
                "spin.beta must be greater than 0 and at most 100, got {}",
                s.beta
            ));
        }
        if !(1..=8).contains(&s.iterations) {
            return invalid(&format!(
                "spin.iterations must be between 1 and 8, got {}",
                s.iterations
            ));
        }
        if s.loss == PreferenceLoss::Ipo {
            return invalid("spin.loss: SPIN uses sigmoid or hinge");
        }
    }
    Ok(())
}

/// The settings of the task-vector methods and weighted merges: which method uses which, their
/// ranges, one weight per model, and a non-zero sum of weights where the merge divides by it.
/// `merged`: the number of models the merge combines.
fn check_merge_settings(merge: &MergeSpec, merged: usize) -> Result<(), PlanError> {
    let method = merge.method;
    let not_used = |field: &'static str, used_by: &'static str| PlanError::MergeSettingNotUsed {
        field,
        method,
        used_by,
    };
    if !merge.weights.is_empty() {
        if !method.takes_weights() {
            return Err(not_used("weights", "linear, task-arithmetic and ties"));
        }
        if merge.weights.len() != merged {
            return Err(PlanError::MergeWeightsCount {
                weights: merge.weights.len(),
                models: merged,
            });
        }
        if let Some(w) = merge.weights.iter().find(|w| !(-10.0..=10.0).contains(*w)) {
            return Err(PlanError::MergeSettingOutOfRange {
                field: "weights",
                range: "between -10 and 10",
                value: w.to_string(),
            });
        }
    }
    if !(merge.density > 0.0 && merge.density <= 1.0) {
        return Err(PlanError::MergeSettingOutOfRange {
            field: "density",
            range: "greater than 0 and at most 1",
            value: merge.density.to_string(),
        });
    }
    if merge.density != 1.0 && !method.takes_density() {
        return Err(not_used("density", "ties"));
    }
    if !(0.0..=10.0).contains(&merge.lambda) {
        return Err(PlanError::MergeSettingOutOfRange {
            field: "lambda",
            range: "between 0 and 10",
            value: merge.lambda.to_string(),
        });
    }
    if merge.lambda != 1.0 && !method.takes_lambda() {
        return Err(not_used("lambda", "task-arithmetic and ties"));
    }
    if merge.normalize.is_some() && method.default_normalize().is_none() {
        return Err(not_used("normalize", "linear, task-arithmetic and ties"));
    }
    // Linear without weights interpolates two models by t and averages more: nothing to
    // normalise, so only the default (true) is accepted there.
    if method == MergeMethod::Linear && merge.weights.is_empty() && merge.normalize == Some(false) {
        return Err(not_used(
            "normalize",
            "linear with weights, task-arithmetic and ties",
        ));
    }
    // ties divides per entry by the weights of the agreeing models (a zero divisor counts as
    // 1 there, as in mergekit); linear and task-arithmetic divide by the sum of all weights.
    let divides_by_sum = matches!(method, MergeMethod::Linear | MergeMethod::TaskArithmetic);
    if divides_by_sum && merge.effective_normalize() && !merge.weights.is_empty() {
        let sum: f64 = merge.weights.iter().sum();
        if sum.abs() < WEIGHT_SUM_EPS {
            return Err(PlanError::MergeWeightsSumToZero { method });
        }
    }
    Ok(())
}

/// mergekit's threshold below which a sum of weights counts as zero (task arithmetic).
const WEIGHT_SUM_EPS: f64 = 1e-8;

/// 1-32 characters of `[a-z0-9-]`, starting and ending with a letter or digit.
fn is_dataset_name(name: &str) -> bool {
    is_label(name, 32)
}

/// 1-`max` lowercase letters, digits or `-`, not starting or ending with `-`.
fn is_label(name: &str, max: usize) -> bool {
    let bytes = name.as_bytes();
    let ok_char = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-';
    !bytes.is_empty()
        && bytes.len() <= max
        && bytes.iter().all(ok_char)
        && bytes.first() != Some(&b'-')
        && bytes.last() != Some(&b'-')
}
