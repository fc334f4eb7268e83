//! The compact form of a result for a Kubernetes termination message.

use super::StageResult;

/// Kubernetes truncates a container's termination message at 4096 bytes.
pub const TERMINATION_MESSAGE_LIMIT: usize = 4096;

/// Longest message kept when the full result does not fit.
const MESSAGE_KEEP: usize = 512;
/// Longest message kept in the last resort.
const MESSAGE_KEEP_MIN: usize = 96;
/// Longest device, dtype and GPU name kept when the full result does not fit.
const COMPUTE_KEEP: usize = 64;

impl StageResult {
    /// JSON of this result that fits a termination message (≤ 4096 bytes). When the full form is
    /// too long, it drops, in order and until it fits: the message tail, optional summary detail,
    /// the artifact list, the tail of the compute report's strings, the summary, most of the
    /// message, and marks the result `truncated`. The stage id, key, outcome and duration are
    /// always kept (ids and keys cut short when they alone are too long).
    pub fn to_termination_message(&self) -> String {
        let full = self.to_json();
        if full.len() <= TERMINATION_MESSAGE_LIMIT {
            return full;
        }
        let mut r = self.clone();
        r.truncated = true;
        let steps: [fn(&mut StageResult); 6] = [
            |r| r.message = r.message.take().map(|m| truncate(&m, MESSAGE_KEEP)),
            |r| {
                if let Some(s) = r.summary.as_mut() {
                    s.shrink();
                }
            },
            |r| r.artifacts.clear(),
            |r| {
                if let Some(c) = r.compute.as_mut() {
                    c.device = truncate(&c.device, COMPUTE_KEEP);
                    c.dtype = truncate(&c.dtype, COMPUTE_KEEP);
                    c.gpu_name = c.gpu_name.take().map(|g| truncate(&g, COMPUTE_KEEP));
                }
            },
            |r| r.summary = None,
            |r| r.message = r.message.take().map(|m| truncate(&m, MESSAGE_KEEP_MIN)),
        ];
        for step in steps {
            step(&mut r);
            let json = r.to_json();
            if json.len() <= TERMINATION_MESSAGE_LIMIT {
                return json;
            }
        }
        // Only absurdly long ids, keys or compute strings get here.
        r.message = None;
        r.compute = None;
        for keep in [256, 64] {
            r.stage_id = truncate(r.stage_id.as_str(), keep).as_str().into();
            r.key = truncate(&r.key, keep);
            let json = r.to_json();
            if json.len() <= TERMINATION_MESSAGE_LIMIT {
                return json;
            }
        }
        // 64 bytes each, escaped at most 6 bytes per byte, and a few numbers: always fits.
        r.to_json()
    }
}

/// At most `max` bytes of `s`, cut at a character boundary, with `…` appended when cut.
fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn truncate_respects_char_boundaries() {
        let s = "ää".repeat(100);
        let t = truncate(&s, 11);
        assert!(t.len() <= 11, "{}", t.len());
        assert!(t.ends_with('…'));
        assert_eq!(truncate("short", 10), "short");
    }
}
