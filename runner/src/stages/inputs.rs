//! Loading the data sets a stage's parameters point at (through the [`Resolver`]).

use crate::data::sft::{FieldMap, SftDataset, SftSchema};
use crate::data::Selection;
use crate::resolve::Resolver;
use crate::stages::Result;
use pruneforge_api::spec::{DatasetFormat, DatasetRef};

/// The SFT records of `r` (any reference the resolver takes), offset and limit applied.
pub fn load_sft(r: &DatasetRef, resolver: &Resolver) -> Result<SftDataset> {
    let path = resolver.resolve(&r.uri)?;
    let schema = match r.format {
        DatasetFormat::Gsm8k => SftSchema::Gsm8k,
        DatasetFormat::Alpaca => match SftSchema::detect(&path)? {
            SftSchema::Alpaca => SftSchema::Alpaca,
            _ => SftSchema::Jsonl(FieldMap::alpaca()),
        },
        DatasetFormat::Jsonl => {
            let f = r.fields.clone().unwrap_or_default();
            SftSchema::Jsonl(FieldMap {
                instruction: f.instruction,
                input: f.input,
                output: f.output,
                id: None,
                gold: None,
            })
        }
    };
    let ds = SftDataset::load(&path, schema)?;
    Ok(ds.select(Selection {
        offset: r.offset as usize,
        limit: r.limit.map(|l| l as usize),
    }))
}
