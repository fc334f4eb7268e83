//! The report's normalized recovery table: per variant and task `(v − chance)/(base − chance)`
//! with its paired-bootstrap 95 % interval (from each variant's `eval.json`), and the mean over
//! the tasks where the base is not at chance.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::eval::Recovery;

/// What the table shows, printed above it.
pub const LEGEND: &str = "(variant − chance) / (base − chance): 1 = as good as the base, 0 = \
chance; 95 % CI from a paired bootstrap over the documents both scored (the average: tasks \
resampled separately). Tasks where the base is within 2 standard errors of chance are marked \
and left out of the average.";

/// The table; empty without any variant's recovery.
pub fn normalized_md(recoveries: &BTreeMap<String, Recovery>, at_chance: &[String]) -> String {
    let mut tasks: Vec<String> = recoveries
        .values()
        .flat_map(|r| r.tasks.iter().filter(|t| t.chance.is_some()))
        .map(|t| t.task.clone())
        .collect();
    tasks.sort();
    tasks.dedup();
    if tasks.is_empty() {
        return String::new();
    }
    let mut s = format!(
        "| variant | {} | average (not at chance) |\n|---|{}---:|\n",
        tasks.join(" | "),
        "---:|".repeat(tasks.len())
    );
    for (variant, rec) in recoveries {
        let cells: Vec<String> = tasks
            .iter()
            .map(|task| {
                let Some(t) = rec.tasks.iter().find(|t| &t.task == task) else {
                    return String::new();
                };
                let value = match (&t.normalized_paired, t.normalized) {
                    (Some(p), _) => {
                        format!("{:.2} [{:.2}, {:.2}]", p.recovery, p.ci95.low, p.ci95.high)
                    }
                    (None, Some(v)) => format!("{v:.2}"),
                    (None, None) => String::new(),
                };
                if at_chance.contains(task) || t.at_chance == Some(true) {
                    format!("{value} (base at chance)").trim().to_string()
                } else {
                    value
                }
            })
            .collect();
        let avg = match (&rec.average_normalized_paired, rec.average_normalized) {
            (Some(p), _) => format!("{:.2} [{:.2}, {:.2}]", p.estimate, p.ci95.low, p.ci95.high),
            (None, Some(a)) => format!("{a:.2}"),
            (None, None) => String::new(),
        };
        let _ = writeln!(s, "| {variant} | {} | {avg} |", cells.join(" | "));
    }
    s
}
