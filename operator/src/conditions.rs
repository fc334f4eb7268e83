//! kstatus conditions: Ready, Reconciling, Stalled.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use pruneforge_api::status::{CONDITION_READY, CONDITION_RECONCILING, CONDITION_STALLED};

/// The desired value of one condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    /// Condition type.
    pub type_: &'static str,
    /// True or False.
    pub status: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
}

impl Desired {
    /// A condition value.
    pub fn new(type_: &'static str, status: bool, reason: &'static str, message: String) -> Self {
        Desired {
            type_,
            status,
            reason,
            message,
        }
    }
}

/// The three conditions in a fixed order (Ready, Reconciling, Stalled) with
/// `lastTransitionTime` kept from `previous` unless the status flipped.
pub fn build(
    previous: &[Condition],
    desired: [Desired; 3],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    debug_assert!(
        !(desired
            .iter()
            .any(|d| d.type_ == CONDITION_RECONCILING && d.status)
            && desired
                .iter()
                .any(|d| d.type_ == CONDITION_STALLED && d.status)),
        "Reconciling and Stalled both True: {desired:?}"
    );
    desired
        .into_iter()
        .map(|d| {
            let status = if d.status { "True" } else { "False" }.to_string();
            let last_transition_time = previous
                .iter()
                .find(|c| c.type_ == d.type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: d.type_.to_string(),
                status,
                reason: d.reason.to_string(),
                message: d.message,
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// Whether the conditions obey kstatus: Reconciling and Stalled are never both True.
pub fn exclusive(conditions: &[Condition]) -> bool {
    !(is_true(conditions, CONDITION_RECONCILING) && is_true(conditions, CONDITION_STALLED))
}

/// Ready / Reconciling / Stalled type names in the order [`build`] expects.
pub const TYPES: [&str; 3] = [CONDITION_READY, CONDITION_RECONCILING, CONDITION_STALLED];

/// Whether condition `type_` is True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}
