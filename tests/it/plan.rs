//! `plan` against real lab clusters: exact, complete, deterministic, and it touches nothing.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::harness::*;

/// Every file under every node's directory except the ones running processes keep changing
/// (etcd's data, logs, runner status): path -> SHA-256.
fn node_files(l: &Lab) -> BTreeMap<String, String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if rel.contains("var/lib/etcd/") || rel.contains("/logs") || rel.contains("/run") {
                continue;
            }
            if p.is_dir() {
                walk(&p, root, out);
            } else if let Ok(bytes) = std::fs::read(&p) {
                out.insert(rel, sha256_hex(&bytes));
            }
        }
    }
    let mut out = BTreeMap::new();
    for i in 1..=l.nodes {
        walk(&l.node_dir(i), &l.dir, &mut out);
    }
    out
}

/// `plan --format json` of the setup's lab and snapshot.
fn plan_json(s: &Setup) -> Value {
    s.cli()
        .plan(&s.lab.inventory)
        .snapshot(&s.snap)
        .format("json")
        .run()
        .success()
        .json()
}

fn check_plan(opts: LabOptions) {
    let nodes = opts.nodes;
    let s = Setup::new(opts, 100);
    let l = &s.lab;
    let before = node_files(l);

    let plan = plan_json(&s);

    // It touched nothing.
    assert_eq!(node_files(l), before, "plan changed files on a node");
    assert!(!s.state().join("runs").exists(), "plan journals nothing");

    // One --initial-cluster, from every node's own name and peer URL.
    let expected_ic: Vec<String> = (1..=nodes)
        .map(|i| format!("cp-{i}=https://{}:2380", l.node_ip(i)))
        .collect();
    let ic = plan["restore"]["initial_cluster"].as_str().unwrap();
    let mut got: Vec<&str> = ic.split(',').collect();
    got.sort();
    assert_eq!(got, expected_ic);
    let run_id = plan["run_id"].as_str().unwrap();
    let token = plan["restore"]["token"].as_str().unwrap();
    assert_eq!(token, format!("etcd-recover-{run_id}"));
    assert_eq!(plan["restore"]["members"].as_array().unwrap().len(), nodes);
    assert_eq!(plan["snapshot"]["sha256"].as_str().unwrap().len(), 64);

    // Per node: name, peer URL, new data dir, and an argv with exactly those values.
    let stage = |name: &str| {
        plan["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap()
    };
    let (restore, rewrite) = (stage("restore"), stage("rewrite-manifest"));
    for i in 1..=nodes {
        let name = format!("cp-{i}");
        let summary = plan["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name.as_str())
            .unwrap();
        let old = l.node_dir(i).join("var/lib/etcd").display().to_string();
        assert_eq!(summary["data_dir_old"], old.as_str());
        assert_eq!(
            summary["data_dir_new"],
            format!("{old}-restored-{run_id}").as_str()
        );
        let acts = &restore["steps"][0]["scope"]["nodes"][&name]["actions"][0];
        let argv: Vec<&str> = acts["argv"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        for flag in [
            format!("--name={name}"),
            format!(
                "--initial-advertise-peer-urls=https://{}:2380",
                l.node_ip(i)
            ),
            format!("--initial-cluster={ic}"),
            format!("--initial-cluster-token={token}"),
            format!("--data-dir={old}-restored-{run_id}"),
        ] {
            assert!(argv.contains(&flag.as_str()), "{flag} in {argv:?}");
        }
        // The diff changes exactly the data hostPath.
        let diff = rewrite["steps"][0]["scope"]["nodes"][&name]["actions"][0]["diff"]
            .as_str()
            .unwrap();
        let minus: Vec<&str> = diff
            .lines()
            .filter(|l| l.starts_with('-') && !l.starts_with("---"))
            .collect();
        let plus: Vec<&str> = diff
            .lines()
            .filter(|l| l.starts_with('+') && !l.starts_with("+++"))
            .collect();
        assert_eq!(minus, [format!("-      path: {old}").as_str()], "{diff}");
        assert_eq!(
            plus,
            [format!("+      path: {old}-restored-{run_id}").as_str()],
            "{diff}"
        );
    }

    // Deterministic: a second plan differs only in run id, token and what derives from them.
    let again = plan_json(&s);
    let norm = |p: &Value| {
        let id = p["run_id"].as_str().unwrap().to_string();
        let mut s = p.to_string().replace(&id, "RUN");
        s = s.replace(p["created_at"].as_str().unwrap(), "TIME");
        let mut v: Value = serde_json::from_str(&s).unwrap();
        v["restore"]["members"] = Value::Null;
        v["restore"]["cluster_id"] = Value::Null;
        // Hashes of rewritten manifests derive from their (compared) contents, which name the run.
        fn drop_derived(v: &mut Value) {
            match v {
                Value::Object(m) => {
                    m.remove("after_sha256");
                    m.remove("before_sha256");
                    m.values_mut().for_each(drop_derived);
                }
                Value::Array(a) => a.iter_mut().for_each(drop_derived),
                _ => {}
            }
        }
        drop_derived(&mut v["stages"]);
        v
    };
    let (a, b) = (norm(&plan), norm(&again));
    if let Some(d) = first_difference(&a, &b, "") {
        panic!("two plans of the same cluster and snapshot differ at {d}");
    }
    assert_eq!(node_files(l), before, "plan changed files on a node");
}

/// Path and values of the first difference between two JSON values.
fn first_difference(a: &Value, b: &Value, at: &str) -> Option<String> {
    use serde_json::Value::*;
    match (a, b) {
        (Object(x), Object(y)) => {
            for k in x.keys().chain(y.keys()) {
                let (va, vb) = (x.get(k).unwrap_or(&Null), y.get(k).unwrap_or(&Null));
                if let Some(d) = first_difference(va, vb, &format!("{at}.{k}")) {
                    return Some(d);
                }
            }
            None
        }
        (Array(x), Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (va, vb))| first_difference(va, vb, &format!("{at}[{i}]"))),
        _ if a == b => None,
        _ => Some(format!("{at}: {a} vs {b}")),
    }
}

#[test]
fn plan_three_nodes_etcd35_root() {
    check_plan(LabOptions::nodes(3).etcd(EtcdVersion::V35));
}

#[test]
fn plan_three_nodes_etcd34_sudo_user() {
    check_plan(
        LabOptions::nodes(3)
            .etcd(EtcdVersion::V34)
            .ssh_user("erlab"),
    );
}

#[test]
fn an_unexpected_manifest_blocks_the_plan_and_names_node_and_file() {
    let s = Setup::new(LabOptions::nodes(3), 0);
    let l = &s.lab;
    // A backup left in the manifests directory: the kubelet would run it too.
    let m = l.manifests_dir(2);
    std::fs::copy(m.join("etcd.yaml"), m.join("etcd.yaml.bak")).unwrap();
    let out = s
        .cli()
        .plan(&l.inventory)
        .snapshot(&s.snap)
        .run()
        .expect_exit(3)
        .stdout_contains("apply will refuse this plan");
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains("error: cp-2:"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("etcd.yaml.bak"), "{line}");
    // apply refuses too, and changes nothing.
    let before = l.manifests();
    s.cli()
        .apply(&l.inventory)
        .snapshot(&s.snap)
        .yes()
        .output("plain")
        .run()
        .expect_exit(3)
        .stderr_contains("etcd.yaml.bak")
        .stderr_contains("nothing was changed");
    assert_eq!(l.manifests(), before);
    std::fs::remove_file(m.join("etcd.yaml.bak")).unwrap();
}

#[test]
fn a_saved_plan_is_refused_after_drift_and_applied_when_unchanged() {
    let s = Setup::new(LabOptions::nodes(1), 0);
    let l = &s.lab;
    let saved = s.tmp.path().join("plan.json");
    s.cli()
        .plan(&l.inventory)
        .snapshot(&s.snap)
        .arg("--out")
        .arg(&saved)
        .run()
        .success();
    let apply_saved = || {
        s.cli()
            .apply(&l.inventory)
            .plan_file(&saved)
            .yes()
            .output("plain")
            .run()
    };
    // Drift: a manifest changes after review.
    let api = l.manifests_dir(1).join("kube-scheduler.yaml");
    let original = std::fs::read(&api).unwrap();
    let mut changed = original.clone();
    changed.extend_from_slice(b"# edited after the plan was reviewed\n");
    std::fs::write(&api, &changed).unwrap();
    let before = l.manifests();
    apply_saved()
        .expect_exit(4)
        .stderr_contains("cp-1: kube-scheduler.yaml changed");
    assert_eq!(l.manifests(), before, "nothing changed");
    // Back as reviewed: the saved plan applies, with its own run id.
    std::fs::write(&api, &original).unwrap();
    let applied = apply_saved().success();
    let plan: Value = serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    applied.stderr_contains(plan["run_id"].as_str().unwrap());
    l.healthy_cluster_id();
}
