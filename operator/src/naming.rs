//! Deterministic, DNS-1123 names of the objects the operator creates.
//!
//! A stage Job is `<job>-<stage>-<key8>` (plus `-a<attempt>` from the second attempt on); when
//! that is longer than [`MAX_NAME`] the `<job>-<stage>` part is cut and an 8-hex hash of the full
//! name is added, so distinct stages never collide. Names stay ≤ 63 characters, which also
//! keeps them valid as label values (the Job controller copies a Job's name into the
//! `batch.kubernetes.io/job-name` label of its pods).

use sha2::{Digest, Sha256};

/// Longest object name used (label-value limit).
pub const MAX_NAME: usize = 63;
/// Room the Job controller needs for pod name suffixes is not our concern (it truncates), but
/// the ConfigMap and Job names share this limit.
const HASH_HEX: usize = 8;

/// Name of the Job running `attempt` (1-based) of `stage` with cache key `key`.
pub fn stage_job_name(job: &str, stage: &str, key: &str, attempt: u32) -> String {
    let key8 = key.get(..8).unwrap_or(key);
    let suffix = if attempt > 1 {
        format!("{key8}-a{attempt}")
    } else {
        key8.to_string()
    };
    bounded(&format!("{job}-{stage}"), &suffix)
}

/// Name of the ConfigMap holding the request of `stage` with cache key `key` (one per key, shared
/// by the stage's attempts).
pub fn request_config_map_name(job: &str, stage: &str, key: &str) -> String {
    let key8 = key.get(..8).unwrap_or(key);
    bounded(&format!("{job}-{stage}"), &format!("{key8}-req"))
}

/// Name of the artifact clean-up Job of `job`.
pub fn gc_job_name(job: &str, uid: &str) -> String {
    let uid8: String = uid
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .take(8)
        .collect();
    bounded(job, &format!("gc-{uid8}"))
}

/// `<base>-<suffix>`, or `<cut base>-<hash8>-<suffix>` when that exceeds [`MAX_NAME`].
fn bounded(base: &str, suffix: &str) -> String {
    let full = format!("{base}-{suffix}");
    if full.len() <= MAX_NAME {
        return full;
    }
    let hash = hex::encode(Sha256::digest(full.as_bytes()));
    let hash = &hash[..HASH_HEX];
    let room = MAX_NAME.saturating_sub(suffix.len() + HASH_HEX + 2);
    let mut cut: String = base.chars().take(room).collect();
    while cut.ends_with('-') || cut.ends_with('.') {
        cut.pop();
    }
    format!("{cut}-{hash}-{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn is_dns_label(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= MAX_NAME
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    }

    #[test]
    fn short_names_are_readable() {
        assert_eq!(
            stage_job_name("quickstart", "prune-n6", KEY, 1),
            "quickstart-prune-n6-01234567"
        );
        assert_eq!(
            stage_job_name("quickstart", "prune-n6", KEY, 3),
            "quickstart-prune-n6-01234567-a3"
        );
        assert_eq!(
            request_config_map_name("quickstart", "score", KEY),
            "quickstart-score-01234567-req"
        );
    }

    #[test]
    fn long_names_are_cut_hashed_and_distinct() {
        let job = "a-very-long-prune-distill-job-name-that-goes-on-and-on-and-on";
        let a = stage_job_name(job, "finetune-n6-self-distill-logit-kd", KEY, 1);
        let b = stage_job_name(job, "finetune-n6-sft-logit-kd", KEY, 1);
        let c = stage_job_name(job, "finetune-n6-self-distill-logit-kd", KEY, 2);
        for n in [&a, &b, &c] {
            assert!(is_dns_label(n), "{n}");
        }
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            a,
            stage_job_name(job, "finetune-n6-self-distill-logit-kd", KEY, 1)
        );
        assert!(is_dns_label(&gc_job_name(job, "9f1c2d3e-aaaa-bbbb")));
    }
}
