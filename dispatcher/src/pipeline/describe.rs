//! `description.yaml`: the tree as LAVA's `pipeline.describe()` lists it (class, name, level,
//! max_retries, description, summary, timeout in seconds, url for downloads, pipeline).

use serde_yaml_ng::{Mapping, Value};

use super::{Action, Pipeline};

/// The tree as a YAML list.
pub fn describe(pipeline: &Pipeline) -> Value {
    Value::Sequence(pipeline.actions.iter().map(node).collect())
}

fn node(a: &Action) -> Value {
    let mut m = Mapping::new();
    m.insert("class".into(), a.class.into());
    m.insert("name".into(), a.name.into());
    m.insert("level".into(), a.level.clone().into());
    m.insert("max_retries".into(), u64::from(a.max_retries).into());
    m.insert("description".into(), a.description.into());
    m.insert("summary".into(), a.summary.into());
    m.insert("timeout".into(), a.timeout.as_secs().into());
    if let Some(url) = &a.url {
        m.insert("url".into(), url.clone().into());
    }
    if !a.children.is_empty() {
        m.insert(
            "pipeline".into(),
            Value::Sequence(a.children.iter().map(node).collect()),
        );
    }
    Value::Mapping(m)
}
