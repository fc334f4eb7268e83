//! Mutations: bytes (bit flips, boundary integers, insertion, deletion, splicing) and JSON
//! values (hostile replacements, removed, duplicated and renamed fields).

use serde_json::{Map, Number, Value};

/// SplitMix64: small, fast and deterministic.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// True with probability `1/n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n.max(1)) == 0
    }

    /// A random element.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        let i = self.below(items.len());
        items.get(i)
    }
}

/// Integers that break length, count, index and size arithmetic.
pub const BOUNDARY_U64: [u64; 24] = [
    0,
    1,
    2,
    3,
    7,
    8,
    0x7F,
    0x80,
    0xFF,
    0x100,
    0xFFFF,
    0x1_0000,
    0x7FFF_FFFF,
    0x8000_0000,
    0xFFFF_FFFE,
    0xFFFF_FFFF,
    0x1_0000_0000,
    1 << 40,
    1 << 53,
    1 << 62,
    0x7FFF_FFFF_FFFF_FFFF,
    0x8000_0000_0000_0000,
    u64::MAX - 1,
    u64::MAX,
];

/// A boundary value, sometimes off by a small amount or random.
pub fn boundary_u64(rng: &mut Rng) -> u64 {
    let base = BOUNDARY_U64[rng.below(BOUNDARY_U64.len())];
    match rng.below(8) {
        0 => base.wrapping_add(1),
        1 => base.wrapping_sub(1),
        2 => rng.next_u64(),
        3 => rng.next_u64() % 4096,
        _ => base,
    }
}

/// Text fragments that upset parsers of JSON, CSV, templates and UTF-8 text.
const TOKENS: [&[u8]; 32] = [
    b"\"",
    b"\\",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\n",
    b"\r",
    b"\r\n",
    b"\t",
    b"\0",
    b"-1",
    b"1e999",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"NaN",
    b"null",
    b"\\u0000",
    b"\\ud800",
    "ä".as_bytes(),
    "…".as_bytes(),
    "😀".as_bytes(),
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",
    b"\xef\xbb\xbf",
    b"{{",
    b"{%",
    b"#### ",
    b"_",
];

/// Byte-level mutation of `input`. `hot` bytes at the start (a header) get half of the
/// position-based mutations; `others` are splice donors.
pub fn mutate_bytes(rng: &mut Rng, input: &[u8], others: &[Vec<u8>], hot: usize) -> Vec<u8> {
    let mut out = input.to_vec();
    let len = out.len();
    let pos = |rng: &mut Rng, len: usize| -> usize {
        if hot > 0 && rng.one_in(2) {
            rng.below(hot.min(len))
        } else {
            rng.below(len)
        }
    };
    match rng.below(11) {
        0 if len > 0 => {
            let i = pos(rng, len);
            out[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = pos(rng, len);
            out[i] = *rng
                .pick(&[0u8, 0xFF, 0x7F, 0x80, 0x01, b'0', b'9', b' '])
                .unwrap_or(&0);
            if rng.one_in(3) {
                out[i] = rng.next_u64() as u8;
            }
        }
        2 | 3 if len > 0 => {
            // An integer field overwritten with a boundary value (little endian, any width).
            let width = *rng.pick(&[1usize, 2, 4, 8, 8, 8]).unwrap_or(&8);
            let i = pos(rng, len);
            let i = if rng.one_in(2) { i - i % width } else { i };
            let v = boundary_u64(rng).to_le_bytes();
            for (k, b) in v.iter().take(width).enumerate() {
                if let Some(slot) = out.get_mut(i + k) {
                    *slot = *b;
                }
            }
        }
        4 => {
            let i = pos(rng, len + 1).min(len);
            let bytes: Vec<u8> = if rng.one_in(4) {
                vec![rng.next_u64() as u8; 1 + rng.below(4096)]
            } else {
                (0..1 + rng.below(16))
                    .map(|_| rng.next_u64() as u8)
                    .collect()
            };
            out.splice(i..i, bytes);
        }
        5 if len > 0 => {
            let i = pos(rng, len);
            let span = if rng.one_in(4) { len } else { 16 };
            let n = 1 + rng.below((len - i).min(span));
            out.drain(i..(i + n).min(len));
        }
        6 if len > 1 => {
            // Copy a block elsewhere (duplicated fields, repeated records).
            let a = rng.below(len);
            let n = 1 + rng.below((len - a).min(256));
            let block = out[a..a + n].to_vec();
            let at = rng.below(len + 1);
            out.splice(at..at, block);
        }
        7 if len > 0 => out.truncate(pos(rng, len)),
        8 => {
            if let Some(other) = rng.pick(others) {
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                out.truncate(cut);
                out.extend_from_slice(&other[from..]);
            }
        }
        9 => {
            let i = rng.below(len + 1);
            let token = TOKENS[rng.below(TOKENS.len())];
            out.splice(i..i, token.iter().copied());
        }
        _ => {
            // A decimal number in text replaced by a boundary value.
            let digits: Vec<usize> = (0..len).filter(|&i| out[i].is_ascii_digit()).collect();
            if let Some(&start) = rng.pick(&digits) {
                let mut end = start;
                while end < len && out[end].is_ascii_digit() {
                    end += 1;
                }
                let text = match rng.below(4) {
                    0 => format!("-{}", boundary_u64(rng)),
                    1 => "1e308".to_string(),
                    _ => boundary_u64(rng).to_string(),
                };
                out.splice(start..end, text.into_bytes());
            }
        }
    }
    out
}

/// Values that a JSON field should never be trusted to hold.
pub fn hostile_value(rng: &mut Rng) -> Value {
    match rng.below(16) {
        0 => Value::Null,
        1 => Value::Bool(rng.one_in(2)),
        2 | 3 => Value::Number(boundary_u64(rng).into()),
        4 => Value::Number(match rng.below(3) {
            0 => i64::MIN.into(),
            _ => (-((boundary_u64(rng) >> 1) as i64)).into(),
        }),
        5 => Number::from_f64(
            *rng.pick(&[1e308, -1e308, 0.5, -0.0, 1e-320, 3.5, f64::EPSILON])
                .unwrap_or(&0.5),
        )
        .map_or(Value::Null, Value::Number),
        6 => Value::String(String::new()),
        7 => Value::String("ä…😀\u{0}\u{202e}_".repeat(1 + rng.below(8))),
        8 => Value::String("x".repeat(1 + rng.below(1 << 16))),
        9 => Value::String(
            rng.pick(&[
                "../../etc/passwd",
                "/",
                "-",
                "#### 1",
                "{{ x }}",
                "<|im_end|>",
            ])
            .copied()
            .unwrap_or("")
            .into(),
        ),
        10 => Value::Array(Vec::new()),
        11 => Value::Object(Map::new()),
        12 => {
            // Deep nesting (parsers have recursion limits; code walking values may not).
            let mut v = Value::Null;
            for _ in 0..(1 + rng.below(200)) {
                v = if rng.one_in(2) {
                    Value::Array(vec![v])
                } else {
                    let mut m = Map::new();
                    m.insert("a".into(), v);
                    Value::Object(m)
                };
            }
            v
        }
        13 => Value::Array(vec![Value::Number(0.into()); 1 + rng.below(5000)]),
        14 => Value::String(boundary_u64(rng).to_string()),
        _ => Value::Number((rng.next_u64() % 1024).into()),
    }
}

fn count_nodes(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(count_nodes).sum(),
        Value::Object(o) => o.values().map(count_nodes).sum(),
        _ => 0,
    }
}

/// Applies [`mutate_node`] to the `n`-th node of `v` in depth-first order.
fn mutate_nth(rng: &mut Rng, v: &mut Value, n: &mut usize, donor: &Value) -> bool {
    if *n == 0 {
        mutate_node(rng, v, donor);
        return true;
    }
    *n -= 1;
    match v {
        Value::Array(a) => a.iter_mut().any(|c| mutate_nth(rng, c, n, donor)),
        Value::Object(o) => o.values_mut().any(|c| mutate_nth(rng, c, n, donor)),
        _ => false,
    }
}

fn nth_clone(v: &Value, n: &mut usize) -> Option<Value> {
    if *n == 0 {
        return Some(v.clone());
    }
    *n -= 1;
    match v {
        Value::Array(a) => a.iter().find_map(|c| nth_clone(c, n)),
        Value::Object(o) => o.values().find_map(|c| nth_clone(c, n)),
        _ => None,
    }
}

/// Structure-aware mutation of a JSON value: a random node is replaced, removed, duplicated,
/// renamed or swapped with a subtree of `donor`.
pub fn mutate_json(rng: &mut Rng, value: &mut Value, donor: &Value) {
    let mut n = rng.below(count_nodes(value));
    mutate_nth(rng, value, &mut n, donor);
}

fn mutate_node(rng: &mut Rng, node: &mut Value, donor: &Value) {
    match rng.below(10) {
        0..=3 => *node = hostile_value(rng),
        4 => {
            let mut k = rng.below(count_nodes(donor));
            if let Some(v) = nth_clone(donor, &mut k) {
                *node = v;
            }
        }
        5 => match node {
            Value::Object(o) if !o.is_empty() => {
                let key = o
                    .keys()
                    .nth(rng.below(o.len()))
                    .cloned()
                    .unwrap_or_default();
                o.remove(&key);
            }
            Value::Array(a) if !a.is_empty() => {
                let i = rng.below(a.len());
                a.remove(i);
            }
            _ => *node = Value::Null,
        },
        6 => match node {
            Value::Object(o) if !o.is_empty() => {
                let key = o
                    .keys()
                    .nth(rng.below(o.len()))
                    .cloned()
                    .unwrap_or_default();
                if let Some(v) = o.remove(&key) {
                    let renamed = match rng.below(3) {
                        0 => key.to_uppercase(),
                        1 => format!("{key}_"),
                        _ => String::new(),
                    };
                    o.insert(renamed, v);
                }
            }
            Value::Array(a) if !a.is_empty() => {
                let i = rng.below(a.len());
                let copies = if rng.one_in(4) {
                    1 + rng.below(1000)
                } else {
                    1
                };
                let item = a[i].clone();
                for _ in 0..copies {
                    a.push(item.clone());
                }
            }
            _ => *node = hostile_value(rng),
        },
        7 => match node {
            Value::String(s) => {
                let cut = rng.below(s.len() + 1);
                let cut = (0..=cut)
                    .rev()
                    .find(|&c| s.is_char_boundary(c))
                    .unwrap_or(0);
                s.truncate(cut);
                if rng.one_in(2) {
                    let token = TOKENS[rng.below(TOKENS.len())];
                    s.push_str(&String::from_utf8_lossy(token));
                }
            }
            Value::Number(num) => {
                let v = num.as_i64().unwrap_or(0);
                *node = match rng.below(4) {
                    0 => Value::Number(v.wrapping_add(1).into()),
                    1 => Value::Number(v.wrapping_sub(1).into()),
                    2 => Value::Number(v.wrapping_neg().into()),
                    _ => Value::Number(v.wrapping_mul(1 << rng.below(40)).into()),
                };
            }
            Value::Array(a) => a.reverse(),
            _ => *node = hostile_value(rng),
        },
        8 => {
            // Wrap the node in an array or object (a type confusion one level down).
            let inner = std::mem::take(node);
            *node = if rng.one_in(2) {
                Value::Array(vec![inner])
            } else {
                let mut m = Map::new();
                m.insert("value".into(), inner);
                Value::Object(m)
            };
        }
        _ => {
            if let Value::Object(o) = node {
                let mut k = rng.below(count_nodes(donor));
                let key = match nth_clone(donor, &mut k) {
                    Some(Value::Object(d)) if !d.is_empty() => d
                        .keys()
                        .nth(rng.below(d.len()))
                        .cloned()
                        .unwrap_or_default(),
                    _ => "extra".into(),
                };
                o.insert(key, hostile_value(rng));
            } else {
                *node = hostile_value(rng);
            }
        }
    }
}

/// JSON-aware mutation of `body`: as one JSON document when it parses as one, else of one line
/// that parses (JSONL). `None` when neither applies.
pub fn mutate_json_text(rng: &mut Rng, body: &[u8], donor: &[u8]) -> Option<Vec<u8>> {
    let donor_value = serde_json::from_slice::<Value>(donor).unwrap_or(Value::Null);
    if let Ok(mut v) = serde_json::from_slice::<Value>(body) {
        mutate_json(rng, &mut v, &donor_value);
        return serde_json::to_vec(&v).ok();
    }
    let text = std::str::from_utf8(body).ok()?;
    let lines: Vec<&str> = text.split('\n').collect();
    let parsed: Vec<usize> = (0..lines.len())
        .filter(|&i| serde_json::from_str::<Value>(lines[i]).is_ok())
        .collect();
    let &i = rng.pick(&parsed)?;
    let mut v: Value = serde_json::from_str(lines[i]).ok()?;
    let donor_line = rng
        .pick(&lines)
        .and_then(|l| serde_json::from_str::<Value>(l).ok())
        .unwrap_or(donor_value);
    mutate_json(rng, &mut v, &donor_line);
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    out[i] = serde_json::to_string(&v).ok()?;
    match rng.below(6) {
        0 => out.push(out[i].clone()),
        1 => {
            out.remove(i);
        }
        _ => {}
    }
    Some(out.join("\n").into_bytes())
}
