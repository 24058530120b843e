//! Playbooks for tests: the built-in one with stages added or changed.

use std::path::{Path, PathBuf};

use serde_yaml::Value;

/// The text of the built-in playbook (`playbooks/restore-stacked.yaml`).
pub fn builtin_playbook() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks/restore-stacked.yaml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Writes the built-in playbook with `edit` applied to its stages (a YAML sequence of
/// mappings) to `dir/name`; returns the path.
pub fn playbook_with(dir: &Path, name: &str, edit: impl FnOnce(&mut Vec<Value>)) -> PathBuf {
    let mut pb: Value = serde_yaml::from_str(&builtin_playbook()).unwrap();
    edit(pb["stages"].as_sequence_mut().unwrap());
    let path = dir.join(name);
    std::fs::write(&path, serde_yaml::to_string(&pb).unwrap()).unwrap();
    path
}

/// Index of a stage in a playbook's stage list.
pub fn stage_index(stages: &[Value], name: &str) -> usize {
    stages
        .iter()
        .position(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no stage {name}"))
}

/// A `command` step as YAML.
pub fn command_step(name: &str, run: &[&str]) -> Value {
    serde_yaml::from_str(&format!(
        "type: command\nname: {name}\nrun: {}\n",
        serde_json::to_string(run).unwrap()
    ))
    .unwrap()
}

/// A stage of one step.
pub fn stage_of(name: &str, step: Value) -> Value {
    let mut m = serde_yaml::Mapping::new();
    m.insert("name".into(), name.into());
    m.insert("steps".into(), Value::Sequence(vec![step]));
    Value::Mapping(m)
}
