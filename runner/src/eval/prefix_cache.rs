//! Shared-prefix planning for log-likelihood scoring.
//!
//! The requests of one document share their context (all choices of an ARC question), and
//! documents often share long prefixes (TruthfulQA's 6-shot preamble, MMLU's subject
//! description and few-shot examples). The distinct model inputs are arranged in a radix tree
//! (a [`PrefixTree`]): each node is a run of tokens shared by every sequence below it. Running
//! the tree top-down, level by level, computes every shared token once: a node continues its
//! parent's KV-cache row (the first child takes the row over, its siblings fork a copy of the
//! parent's prefix), and the nodes of one level are batched together.
//!
//! Nodes shorter than [`MIN_SHARED_TOKENS`] that would only add a level are folded into their
//! children (recomputing a few tokens is cheaper than one more sequential forward pass).
//!
//! Everything here is pure bookkeeping on token ids; the scorer runs the plan.

/// Shared runs shorter than this are recomputed by each child instead of forming a node.
pub const MIN_SHARED_TOKENS: usize = 8;

pub type NodeId = usize;

/// A run of tokens `[start, end)` shared by every sequence below the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub start: usize,
    pub end: usize,
    /// A sequence passing through the node: its tokens `start..end` are the node's tokens.
    pub seq: usize,
    pub parent: Option<NodeId>,
    pub children: Vec<NodeId>,
    /// Number of ancestors.
    pub depth: usize,
}

impl Node {
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// Distinct, non-empty token sequences arranged by shared prefixes.
#[derive(Debug, Clone)]
pub struct PrefixTree {
    pub nodes: Vec<Node>,
    /// For every sequence, its nodes from the top down; their ranges tile `0..len`.
    pub paths: Vec<Vec<NodeId>>,
}

struct Pending {
    group: Vec<usize>,
    /// All sequences of `group` share tokens `0..shared` and are longer than `shared`.
    shared: usize,
    /// Where the nodes created from this group start (the parent's end).
    seg_start: usize,
    parent: Option<NodeId>,
    depth: usize,
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl PrefixTree {
    /// One node per sequence: no sharing (each sequence is computed on its own).
    pub fn flat(seqs: &[&[u32]]) -> Self {
        let nodes = seqs
            .iter()
            .enumerate()
            .map(|(i, s)| Node {
                start: 0,
                end: s.len(),
                seq: i,
                parent: None,
                children: Vec::new(),
                depth: 0,
            })
            .collect();
        PrefixTree {
            nodes,
            paths: (0..seqs.len()).map(|i| vec![i]).collect(),
        }
    }

    /// The radix tree of `seqs`, which must be distinct and non-empty (the scorer deduplicates
    /// its inputs); the order does not matter.
    pub fn build(seqs: &[&[u32]]) -> Self {
        let mut tree = PrefixTree {
            nodes: Vec::new(),
            paths: vec![Vec::new(); seqs.len()],
        };
        let mut order: Vec<usize> = (0..seqs.len()).filter(|&i| !seqs[i].is_empty()).collect();
        order.sort_by(|&a, &b| seqs[a].cmp(seqs[b]));
        // An explicit stack: sequences can be thousands of tokens long.
        let mut stack = vec![Pending {
            group: order,
            shared: 0,
            seg_start: 0,
            parent: None,
            depth: 0,
        }];
        while let Some(p) = stack.pop() {
            let mut i = 0;
            while i < p.group.len() {
                let tok = seqs[p.group[i]][p.shared];
                let mut j = i + 1;
                while j < p.group.len() && seqs[p.group[j]][p.shared] == tok {
                    j += 1;
                }
                let g = &p.group[i..j];
                let (first, last) = (seqs[g[0]], seqs[g[g.len() - 1]]);
                let lcp = common_prefix(first, last);
                // Sorted: a sequence ending at `lcp` (at most one, they are distinct) comes first.
                let terminal = (first.len() == lcp).then_some(g[0]);
                let rest: Vec<usize> = g.iter().copied().filter(|&s| seqs[s].len() > lcp).collect();
                if rest.is_empty() {
                    tree.add(p.seg_start, lcp, g, p.parent, p.depth);
                } else if lcp - p.seg_start >= MIN_SHARED_TOKENS {
                    let id = tree.add(p.seg_start, lcp, g, p.parent, p.depth);
                    stack.push(Pending {
                        group: rest,
                        shared: lcp,
                        seg_start: lcp,
                        parent: Some(id),
                        depth: p.depth + 1,
                    });
                } else {
                    if let Some(t) = terminal {
                        tree.add(p.seg_start, lcp, &[t], p.parent, p.depth);
                    }
                    stack.push(Pending {
                        group: rest,
                        shared: lcp,
                        seg_start: p.seg_start,
                        parent: p.parent,
                        depth: p.depth,
                    });
                }
                i = j;
            }
        }
        tree
    }

    fn add(
        &mut self,
        start: usize,
        end: usize,
        seqs: &[usize],
        parent: Option<NodeId>,
        depth: usize,
    ) -> NodeId {
        let id = self.nodes.len();
        self.nodes.push(Node {
            start,
            end,
            seq: seqs[0],
            parent,
            children: Vec::new(),
            depth,
        });
        if let Some(p) = parent {
            self.nodes[p].children.push(id);
        }
        for &s in seqs {
            self.paths[s].push(id);
        }
        id
    }

    /// The node holding position `pos` of sequence `seq`, if `pos` is inside the sequence.
    pub fn node_at(&self, seq: usize, pos: usize) -> Option<NodeId> {
        let path = self.paths.get(seq)?;
        let i = path.partition_point(|&n| self.nodes[n].end <= pos);
        path.get(i)
            .copied()
            .filter(|&n| self.nodes[n].start <= pos && pos < self.nodes[n].end)
    }

    /// Tokens run through the model (each node once).
    pub fn tokens(&self) -> usize {
        self.nodes.iter().map(Node::len).sum()
    }

    /// Node ids by depth.
    pub fn levels(&self) -> Vec<Vec<NodeId>> {
        let mut levels: Vec<Vec<NodeId>> = Vec::new();
        for (id, n) in self.nodes.iter().enumerate() {
            if levels.len() <= n.depth {
                levels.resize(n.depth + 1, Vec::new());
            }
            levels[n.depth].push(id);
        }
        levels
    }
}

/// A fork to do before a level runs: copy positions `0..len` of row `src` into row `dst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fork {
    pub src: usize,
    pub dst: usize,
    pub len: usize,
}

/// Nodes run together in one forward pass: packed one after another
/// ([`BatchLimits::packed`]) or right-padded to `width` tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub nodes: Vec<NodeId>,
    /// The longest node's tokens.
    pub width: usize,
}

/// One level of the tree: forks first, then the batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LevelPlan {
    pub forks: Vec<Fork>,
    /// Rows that start empty (nodes without a parent).
    pub fresh: Vec<usize>,
    pub batches: Vec<Batch>,
}

/// How to run a tree: cache rows per node, forks and batches per level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub levels: Vec<LevelPlan>,
    /// Cache row of each node.
    pub rows: Vec<usize>,
    /// Cache rows needed.
    pub n_rows: usize,
    /// Cache positions needed per row (padding included).
    pub capacity: usize,
    /// Tokens the forward passes run: Σ batch rows × width when right-padded, the nodes'
    /// tokens when packed.
    pub padded_tokens: usize,
}

/// Limits of one forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Sequences per forward pass.
    pub rows: usize,
    /// Tokens per forward pass (rows × width when right-padded, Σ lengths when packed); a
    /// longer node runs alone.
    pub tokens: usize,
    /// Nodes of a pass are packed one after another without padding
    /// ([`crate::model::llama::Llama::forward_cached_packed`]) rather than right-padded to the
    /// longest.
    pub packed: bool,
}

impl BatchLimits {
    /// Tokens a pass over nodes of `lens` (sorted longest first) runs.
    fn pass_tokens(&self, lens: &[usize]) -> usize {
        if self.packed {
            lens.iter().sum()
        } else {
            lens.len() * lens.first().copied().unwrap_or(0)
        }
    }
}

/// The cost of one more forward pass in padded tokens: every pass streams all weights once,
/// and a GEMM over a few hundred rows runs well below one over a thousand (`--example
/// gemm_layouts`). Measured on the quickstart's base eval (answer_nll, ARC-Easy, HellaSwag,
/// PIQA; 2 vCPU Xeon, alternated): 16 gave 128 forward passes and 30.5-31.7 s, 128 gave 67
/// passes (12 % more padding) and 28.3-30.5 s, 256 gave 56 passes and 30.4-31.6 s.
pub const CALL_COST_TOKENS: usize = 128;

/// Cuts lengths sorted longest first into contiguous batches minimising
/// `Σ tokens run + CALL_COST_TOKENS × batches` within the limits (dynamic programming over
/// the cut points). Right-padded, a batch runs rows × its first (longest) length; packed, the
/// sum of its lengths, so only the number of passes is left to minimise.
pub fn cut_batches(lens: &[usize], limits: BatchLimits) -> Vec<std::ops::Range<usize>> {
    let n = lens.len();
    let rows = limits.rows.max(1);
    let mut best = vec![usize::MAX; n + 1];
    let mut from = vec![0usize; n + 1];
    best[0] = 0;
    for j in 1..=n {
        for i in j.saturating_sub(rows)..j {
            let k = j - i;
            let tokens = limits.pass_tokens(&lens[i..j]);
            if k > 1 && tokens > limits.tokens {
                continue;
            }
            if best[i] == usize::MAX {
                continue;
            }
            let cost = best[i] + tokens + CALL_COST_TOKENS;
            if cost < best[j] {
                best[j] = cost;
                from[j] = i;
            }
        }
    }
    let mut out = Vec::new();
    let mut j = n;
    while j > 0 {
        out.push(from[j]..j);
        j = from[j];
    }
    out.reverse();
    out
}

impl Plan {
    /// Assigns rows (a first child continues its parent's row; siblings fork it; leaves give
    /// their row back after their level) and cuts each level into batches of nodes sorted by
    /// length, longest first.
    pub fn new(tree: &PrefixTree, limits: BatchLimits) -> Self {
        let mut rows = vec![usize::MAX; tree.nodes.len()];
        let mut free: Vec<usize> = Vec::new();
        let mut n_rows = 0usize;
        let mut capacity = 0usize;
        let mut padded_tokens = 0usize;
        let mut levels = Vec::new();
        for level in tree.levels() {
            let mut forks = Vec::new();
            let mut fresh = Vec::new();
            let mut alloc = |free: &mut Vec<usize>| {
                free.pop().unwrap_or_else(|| {
                    n_rows += 1;
                    n_rows - 1
                })
            };
            for &id in &level {
                let node = &tree.nodes[id];
                rows[id] = match node.parent {
                    None => {
                        let r = alloc(&mut free);
                        fresh.push(r);
                        r
                    }
                    Some(p) if tree.nodes[p].children.first() == Some(&id) => rows[p],
                    Some(p) => {
                        let r = alloc(&mut free);
                        forks.push(Fork {
                            src: rows[p],
                            dst: r,
                            len: node.start,
                        });
                        r
                    }
                };
            }
            let mut order = level.clone();
            order.sort_by(|&a, &b| {
                let (na, nb) = (&tree.nodes[a], &tree.nodes[b]);
                nb.len().cmp(&na.len()).then(na.start.cmp(&nb.start))
            });
            let lens: Vec<usize> = order.iter().map(|&id| tree.nodes[id].len()).collect();
            let batches: Vec<Batch> = cut_batches(&lens, limits)
                .into_iter()
                .map(|r| Batch {
                    width: lens[r.start],
                    nodes: order[r].to_vec(),
                })
                .collect();
            for b in &batches {
                let lens: Vec<usize> = b.nodes.iter().map(|&id| tree.nodes[id].len()).collect();
                padded_tokens += limits.pass_tokens(&lens);
                for &id in &b.nodes {
                    let node = &tree.nodes[id];
                    let run = if limits.packed { node.len() } else { b.width };
                    capacity = capacity.max(node.start + run);
                }
            }
            for &id in &level {
                if tree.nodes[id].children.is_empty() {
                    free.push(rows[id]);
                }
            }
            levels.push(LevelPlan {
                forks,
                fresh,
                batches,
            });
        }
        Plan {
            levels,
            rows,
            n_rows,
            capacity,
            padded_tokens,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(prefix: &[u32], tail: &[u32]) -> Vec<u32> {
        prefix.iter().chain(tail).copied().collect()
    }

    /// Every position of every sequence lies in exactly one node of its path, and that node's
    /// representative sequence has the same tokens up to there.
    fn check_tree(seqs: &[&[u32]], tree: &PrefixTree) {
        for (s, toks) in seqs.iter().enumerate() {
            let path = &tree.paths[s];
            let mut at = 0;
            for &n in path {
                let node = &tree.nodes[n];
                assert_eq!(node.start, at, "seq {s}: path tiles 0..len");
                at = node.end;
                let rep = seqs[node.seq];
                assert_eq!(&rep[..node.end], &toks[..node.end], "seq {s} node {n}");
            }
            assert_eq!(at, toks.len(), "seq {s} path ends at its length");
            for w in path.windows(2) {
                assert_eq!(tree.nodes[w[1]].parent, Some(w[0]));
            }
            for pos in 0..toks.len() {
                let n = tree.node_at(s, pos).expect("covered");
                assert!(tree.nodes[n].start <= pos && pos < tree.nodes[n].end);
            }
            assert_eq!(tree.node_at(s, toks.len()), None);
        }
    }

    #[test]
    fn shared_context_is_one_node() {
        let ctx: Vec<u32> = (100..120).collect();
        let a = seq(&ctx, &[1, 2, 3]);
        let b = seq(&ctx, &[4, 5]);
        let c = seq(&ctx, &[1, 2, 9]);
        let seqs: Vec<&[u32]> = vec![&a, &b, &c];
        let tree = PrefixTree::build(&seqs);
        check_tree(&seqs, &tree);
        // The context (20 tokens) once; "1 2" (2 tokens) is too short to share.
        assert_eq!(tree.tokens(), 20 + 3 + 2 + 3);
        let root = tree.paths[0][0];
        assert_eq!((tree.nodes[root].start, tree.nodes[root].end), (0, 20));
        assert_eq!(tree.nodes[root].children.len(), 3);
    }

    #[test]
    fn nested_sharing_and_prefix_sequences() {
        let pre: Vec<u32> = (1..=10).collect();
        let mid: Vec<u32> = (50..60).collect();
        let a = seq(&seq(&pre, &mid), &[7]);
        let b = seq(&seq(&pre, &mid), &[8, 9]);
        let c = seq(&pre, &[99]);
        let d = seq(&pre, &mid); // a strict prefix of a and b
        let e = vec![5u32, 6];
        let seqs: Vec<&[u32]> = vec![&a, &b, &c, &d, &e];
        let tree = PrefixTree::build(&seqs);
        check_tree(&seqs, &tree);
        assert_eq!(tree.tokens(), 10 + 10 + 1 + 2 + 1 + 2);
        // d ends in the shared node of a and b.
        let d_last = *tree.paths[3].last().expect("path");
        assert!(tree.paths[0].contains(&d_last) && tree.paths[1].contains(&d_last));
        assert_eq!(tree.levels().len(), 3);
    }

    #[test]
    fn short_shared_runs_are_folded_into_children() {
        let a = vec![1u32, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        let b = vec![1u32, 2, 30, 40, 50, 60, 70, 80, 90, 100];
        let c = vec![1u32, 2];
        let seqs: Vec<&[u32]> = vec![&a, &b, &c];
        let tree = PrefixTree::build(&seqs);
        check_tree(&seqs, &tree);
        assert_eq!(tree.nodes.len(), 3);
        assert!(tree
            .nodes
            .iter()
            .all(|n| n.parent.is_none() && n.start == 0));
        assert_eq!(tree.tokens(), 22);
    }

    #[test]
    fn flat_tree_has_one_node_per_sequence() {
        let a = vec![1u32, 2, 3];
        let b = vec![1u32, 2, 4];
        let seqs: Vec<&[u32]> = vec![&a, &b];
        let tree = PrefixTree::flat(&seqs);
        check_tree(&seqs, &tree);
        assert_eq!(tree.tokens(), 6);
    }

    /// Three sequences on a 20-token context (1, 2 and 3 tokens of their own) and two on a
    /// 30-token one (1 token each).
    fn two_contexts() -> Vec<Vec<u32>> {
        let ctx: Vec<u32> = (100..120).collect();
        let other: Vec<u32> = (200..230).collect();
        vec![
            seq(&ctx, &[1]),
            seq(&ctx, &[2, 3]),
            seq(&ctx, &[4, 5, 6]),
            seq(&other, &[1]),
            seq(&other, &[2]),
        ]
    }

    #[test]
    fn plan_forks_siblings_and_reuses_rows() {
        let owned = two_contexts();
        let seqs: Vec<&[u32]> = owned.iter().map(Vec::as_slice).collect();
        let tree = PrefixTree::build(&seqs);
        let plan = Plan::new(
            &tree,
            BatchLimits {
                rows: 2,
                tokens: 1000,
                packed: false,
            },
        );
        assert_eq!(plan.levels.len(), 2);
        let top = &plan.levels[0];
        assert_eq!(top.fresh.len(), 2);
        assert!(top.forks.is_empty());
        // Longest first: the 30-token root, then the 20-token root.
        assert_eq!(top.batches.len(), 1);
        assert_eq!(top.batches[0].width, 30);
        let leaves = &plan.levels[1];
        // 5 children, 2 of them continue their parent's row, 3 fork.
        assert_eq!(leaves.forks.len(), 3);
        assert!(leaves.forks.iter().all(|f| f.len == 20 || f.len == 30));
        assert_eq!(leaves.batches.len(), 3);
        assert_eq!(plan.n_rows, 5);
        let mut used: Vec<usize> = tree.paths.iter().map(|p| plan.rows[p[1]]).collect();
        used.sort_unstable();
        used.dedup();
        assert_eq!(used.len(), 5, "every leaf has its own row");
        // Capacity covers padding: 30 + 1 for the other root's children, 20 + 3 for ctx's.
        assert_eq!(plan.capacity, 31);
        // Top level 2 × 30; leaves [3, 2] × 3 wide, [1, 1] and [1].
        assert_eq!(plan.padded_tokens, 60 + 6 + 2 + 1);
    }

    #[test]
    fn batches_trade_padding_against_calls() {
        let limits = BatchLimits {
            rows: 4,
            tokens: 1000,
            packed: false,
        };
        // Similar lengths share a pass; a short tail gets its own pass.
        let cuts = cut_batches(&[100, 98, 97, 10, 9, 9], limits);
        assert_eq!(cuts, vec![0..3, 3..6]);
        // At most 4 rows per pass.
        let cuts = cut_batches(&[5; 9], limits);
        assert!(cuts.iter().all(|r| r.len() <= 4));
        assert_eq!(cuts.iter().map(|r| r.len()).sum::<usize>(), 9);
        assert!(cut_batches(&[], limits).is_empty());
    }

    #[test]
    fn plan_respects_token_limit() {
        let a: Vec<u32> = (0..100).collect();
        let b: Vec<u32> = (1000..1100).collect();
        let c: Vec<u32> = (2000..2010).collect();
        let seqs: Vec<&[u32]> = vec![&a, &b, &c];
        let tree = PrefixTree::build(&seqs);
        let plan = Plan::new(
            &tree,
            BatchLimits {
                rows: 8,
                tokens: 150,
                packed: false,
            },
        );
        let widths: Vec<(usize, usize)> = plan.levels[0]
            .batches
            .iter()
            .map(|b| (b.nodes.len(), b.width))
            .collect();
        // A second 100-token row would exceed 150 padded tokens; so would the short node
        // padded to 100.
        assert_eq!(widths, vec![(1, 100), (1, 100), (1, 10)]);
    }

    #[test]
    fn packed_batches_run_no_padding_and_fill_passes() {
        let limits = BatchLimits {
            rows: 4,
            tokens: 250,
            packed: true,
        };
        // Padding costs nothing: the fewest passes within 4 rows and 250 tokens.
        let cuts = cut_batches(&[100, 98, 40, 10, 9, 9], limits);
        assert_eq!(cuts.len(), 2);
        for r in &cuts {
            let lens = &[100, 98, 40, 10, 9, 9][r.clone()];
            assert!(r.len() <= 4 && lens.iter().sum::<usize>() <= 250, "{r:?}");
        }
        // A node over the limit still runs, alone.
        assert_eq!(cut_batches(&[300, 5], limits), vec![0..1, 1..2]);
    }

    #[test]
    fn packed_plan_counts_and_reserves_real_tokens_only() {
        let owned = two_contexts();
        let seqs: Vec<&[u32]> = owned.iter().map(Vec::as_slice).collect();
        let tree = PrefixTree::build(&seqs);
        let limits = BatchLimits {
            rows: 8,
            tokens: 1000,
            packed: true,
        };
        let plan = Plan::new(&tree, limits);
        assert_eq!(plan.padded_tokens, tree.tokens());
        // The longest sequence: 30 shared tokens and one of its own.
        assert_eq!(plan.capacity, 31);
        assert!(plan.levels.iter().all(|l| l.batches.len() == 1));
    }
}
