//! `keel data show`: a version's dataset and its split, so a person (or another tool) sees
//! exactly which rows it was trained, calibrated and tested on.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::context::open_store;
use crate::output;
use crate::stages::data::{label_and_split, load_records};
use crate::stages::evaluate::split_of;

/// One split: its size, its rows per label and (in JSON) its row ids.
#[derive(Debug, Serialize)]
struct SplitView {
    rows: usize,
    by_label: BTreeMap<String, usize>,
    ids: Vec<String>,
}

#[derive(Debug, Serialize)]
struct DataView {
    model: String,
    dataset: String,
    name: String,
    records: usize,
    labels: Vec<String>,
    split: serde_json::Value,
    train: SplitView,
    validation: SplitView,
    test: SplitView,
}

pub async fn show(home: &std::path::Path, json: bool, spec: &str) -> anyhow::Result<()> {
    let store = open_store(home).await?;
    let model = store.resolve(spec).await?;
    let dataset = store.dataset(&model.dataset_id).await?;
    let records = load_records(&store, &dataset).await?;
    let cfg = split_of(&store, &model).await?;
    let l = label_and_split(&records, &cfg)?;
    let view = |rows: &[usize]| {
        let mut by_label = BTreeMap::new();
        for &i in rows {
            *by_label.entry(l.labels[l.y[i]].clone()).or_insert(0) += 1;
        }
        SplitView { rows: rows.len(), by_label, ids: rows.iter().map(|&i| records[i].id.clone()).collect() }
    };
    let out = DataView {
        model: model.tag(),
        dataset: dataset.fields.id.as_str().to_owned(),
        name: dataset.fields.name.clone(),
        records: records.len(),
        labels: l.labels.clone(),
        split: serde_json::to_value(&cfg)?,
        train: view(&l.rows.train),
        validation: view(&l.rows.validation),
        test: view(&l.rows.test),
    };
    if json {
        return output::json(&out);
    }
    println!("model     {}", out.model);
    println!("dataset   {} ({}, {} records)", out.dataset, out.name, out.records);
    println!("labels    {}", out.labels.join(", "));
    for (name, s) in [("train", &out.train), ("validation", &out.validation), ("test", &out.test)] {
        let per: Vec<String> = s.by_label.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!("{name:<10}{:>6} rows: {}", s.rows, per.join(", "));
    }
    println!("(row ids of each split: --json)");
    Ok(())
}
