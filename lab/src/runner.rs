//! The static-pod runner: the lab's stand-in for the kubelet's file source.
//!
//! It watches the static pod path with inotify and lists it on every change, and also every
//! `fileCheckFrequency` (from the node's KubeletConfiguration), as the kubelet's file source
//! does (so a moved manifest is noticed within a tick, 100 ms). Each listing reads it the way
//! the kubelet does: files whose name starts with `.` are skipped, directories are not
//! recursed into (logged), unreadable or invalid files yield no pod (so a pod whose manifest
//! became invalid is stopped), and when two files declare the same `metadata.name` the first
//! by file name wins and the other is ignored (logged). Each pod's first container runs as a
//! host process in its own process group, with `command[0]` resolved through the image's
//! "rootfs bin" directory and container paths translated through the volume mounts to the
//! hostPath volumes. A changed manifest (or a renamed file) restarts the pod; a removed one is
//! stopped (SIGTERM, SIGKILL after the grace period); an exited container is restarted with
//! back-off (1 s doubling to 10 s, reset after 10 s of running).
//!
//! The runner writes `run/pods.json` after every change. When it stops (SIGTERM) it leaves
//! the pods running, and a new runner adopts every pod whose manifest is unchanged, as a
//! restarted kubelet does.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use crate::state::{LabState, NodePaths};
use crate::util::{self, ProcId};

/// Default grace period when a pod spec sets no `terminationGracePeriodSeconds`.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(10);
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);
const TICK: Duration = Duration::from_millis(100);

/// One pod in the runner's status file `run/pods.json` (a JSON object keyed by pod name).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodStatus {
    /// Pid of the container process (also its process group id); `None` while waiting to
    /// (re)start.
    pub pid: Option<i32>,
    /// Kernel start time of `pid`, to tell a recycled pid apart.
    pub start_time: Option<u64>,
    /// `running`, `terminating` or `waiting`.
    pub state: String,
    /// The manifest file the pod comes from.
    pub manifest: PathBuf,
    /// SHA-256 of the manifest file's bytes.
    pub manifest_sha256: String,
    /// Hash of the parsed pod spec and file path; a change means a new pod (restart).
    pub spec_hash: String,
    /// When the current process started (RFC 3339), if running.
    pub started_at: Option<String>,
    /// Restarts of this pod since its manifest last changed.
    pub restarts: u32,
    /// The image the container runs.
    pub image: String,
    /// The host command line the container runs (after path translation).
    pub argv: Vec<String>,
    /// Why the last start failed, if it did.
    pub last_error: Option<String>,
}

/// Reads a runner status file (missing file = no pods).
pub fn read_status(path: &Path) -> BTreeMap<String, PodStatus> {
    fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// A hostPath volume of a pod.
#[derive(Debug, Clone)]
struct HostPathVol {
    path: String,
    kind: String,
}

/// What the runner needs from a parsed manifest.
#[derive(Debug, Clone)]
struct PodSpec {
    name: String,
    image: String,
    command: Vec<String>,
    env: Vec<(String, String)>,
    working_dir: Option<String>,
    /// (mountPath, volume name)
    mounts: Vec<(String, String)>,
    volumes: BTreeMap<String, Option<HostPathVol>>,
    grace: Duration,
}

fn parse_pod(text: &str) -> Result<PodSpec> {
    let v: serde_yaml::Value = serde_yaml::from_str(text).context("not valid YAML")?;
    if v["kind"].as_str() != Some("Pod") {
        bail!("kind is {:?}, not Pod", v["kind"].as_str().unwrap_or(""));
    }
    let name = v["metadata"]["name"]
        .as_str()
        .filter(|s| !s.is_empty())
        .context("metadata.name is missing")?
        .to_string();
    let containers = v["spec"]["containers"]
        .as_sequence()
        .filter(|c| !c.is_empty())
        .context("spec.containers is empty")?;
    let c = &containers[0];
    let image = c["image"]
        .as_str()
        .context("containers[0].image is missing")?
        .to_string();
    let strings = |key: &str| -> Vec<String> {
        c[key]
            .as_sequence()
            .map(|s| {
                s.iter()
                    .map(|x| match x {
                        serde_yaml::Value::String(s) => s.clone(),
                        other => serde_yaml::to_string(other)
                            .unwrap_or_default()
                            .trim()
                            .to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut command = strings("command");
    command.extend(strings("args"));
    if command.is_empty() {
        bail!("containers[0] has no command (the lab's images have no entrypoint)");
    }
    let env = c["env"]
        .as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|e| {
                    Some((
                        e["name"].as_str()?.to_string(),
                        e["value"].as_str().unwrap_or("").to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let mounts = c["volumeMounts"]
        .as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|m| {
                    Some((
                        m["mountPath"].as_str()?.to_string(),
                        m["name"].as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut volumes = BTreeMap::new();
    if let Some(vols) = v["spec"]["volumes"].as_sequence() {
        for vol in vols {
            let Some(vname) = vol["name"].as_str() else {
                continue;
            };
            let hp = vol["hostPath"]["path"].as_str().map(|p| HostPathVol {
                path: p.to_string(),
                kind: vol["hostPath"]["type"].as_str().unwrap_or("").to_string(),
            });
            volumes.insert(vname.to_string(), hp);
        }
    }
    let grace = v["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_GRACE);
    Ok(PodSpec {
        name,
        image,
        command,
        env,
        working_dir: c["workingDir"].as_str().map(str::to_string),
        mounts,
        volumes,
        grace,
    })
}

/// The value with every object's keys sorted, so that key order does not change the hash.
fn canonical_json(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => {
            let mut items: Vec<(String, serde_json::Value)> = m.into_iter().collect();
            items.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(
                items
                    .into_iter()
                    .map(|(k, v)| (k, canonical_json(v)))
                    .collect(),
            )
        }
        serde_json::Value::Array(a) => {
            serde_json::Value::Array(a.into_iter().map(canonical_json).collect())
        }
        other => other,
    }
}

/// Translates a container path through the mounts (longest mountPath prefix wins).
fn translate(spec: &PodSpec, path: &str) -> String {
    let mut best: Option<(&str, &HostPathVol)> = None;
    for (mount, vname) in &spec.mounts {
        let m = mount.trim_end_matches('/');
        let matches = path == m || path.starts_with(&format!("{m}/")) || m.is_empty();
        if !matches {
            continue;
        }
        if let Some(Some(hp)) = spec.volumes.get(vname) {
            if best.is_none_or(|(b, _)| m.len() > b.len()) {
                best = Some((m, hp));
            }
        }
    }
    match best {
        Some((m, hp)) => format!("{}{}", hp.path.trim_end_matches('/'), &path[m.len()..]),
        None => path.to_string(),
    }
}

fn translate_arg(spec: &PodSpec, arg: &str) -> String {
    if arg.starts_with('/') {
        return translate(spec, arg);
    }
    if arg.starts_with('-') {
        if let Some((flag, value)) = arg.split_once('=') {
            if value.starts_with('/') {
                return format!("{flag}={}", translate(spec, value));
            }
        }
    }
    arg.to_string()
}

/// Checks or creates the hostPath volumes that are mounted, like the kubelet's hostPath
/// type checks.
fn prepare_volumes(spec: &PodSpec) -> Result<()> {
    for (mount, vname) in &spec.mounts {
        let Some(vol) = spec.volumes.get(vname) else {
            bail!("volumeMount {mount} names volume {vname}, which the pod does not define");
        };
        let Some(hp) = vol else { continue };
        let p = Path::new(&hp.path);
        match hp.kind.as_str() {
            "DirectoryOrCreate" if !p.is_dir() => {
                fs::create_dir_all(p)
                    .with_context(|| format!("hostPath {}: cannot create directory", hp.path))?;
                util::chmod(p, 0o755)?;
            }
            "Directory" if !p.is_dir() => {
                bail!("hostPath type check failed: {} is not a directory", hp.path)
            }
            "FileOrCreate" if !p.exists() => {
                if let Some(parent) = p.parent() {
                    fs::create_dir_all(parent)
                        .with_context(|| format!("hostPath {}: cannot create parent", hp.path))?;
                }
                File::create(p)
                    .with_context(|| format!("hostPath {}: cannot create file", hp.path))?;
                util::chmod(p, 0o644)?;
            }
            "File" if !p.is_file() => {
                bail!("hostPath type check failed: {} is not a file", hp.path)
            }
            _ => {}
        }
    }
    Ok(())
}

/// A pod the manifests ask for.
#[derive(Debug, Clone)]
struct Desired {
    file: PathBuf,
    sha256: String,
    spec_hash: String,
    spec: PodSpec,
}

/// A container process the runner looks after.
#[derive(Debug)]
struct Running {
    proc: ProcId,
    child: Option<Child>,
    file: PathBuf,
    sha256: String,
    spec_hash: String,
    image: String,
    argv: Vec<String>,
    started_at: String,
    started: Instant,
    grace: Duration,
    /// Set once SIGTERM was sent: the SIGKILL deadline.
    terminating: Option<Instant>,
    killed: bool,
}

#[derive(Debug, Default)]
struct Slot {
    desired: Option<Desired>,
    running: Option<Running>,
    restarts: u32,
    backoff: Option<Duration>,
    next_start: Option<Instant>,
    last_error: Option<String>,
}

/// The runner for one node.
pub struct Runner {
    lab_dir: PathBuf,
    node: String,
    paths: NodePaths,
    images: BTreeMap<String, PathBuf>,
    manifests: PathBuf,
    poll: Duration,
    slots: BTreeMap<String, Slot>,
    reported: BTreeSet<String>,
    dirty: bool,
}

/// Reads `staticPodPath` and `fileCheckFrequency` from a KubeletConfiguration.
pub fn read_kubelet_config(path: &Path) -> Result<(PathBuf, Duration)> {
    let text = util::read_to_string(path)?;
    let v: serde_yaml::Value = serde_yaml::from_str(&text)
        .with_context(|| format!("{} is not valid YAML", path.display()))?;
    let spp = v["staticPodPath"]
        .as_str()
        .with_context(|| format!("{} sets no staticPodPath", path.display()))?;
    let poll = v["fileCheckFrequency"]
        .as_str()
        .and_then(util::parse_duration)
        .filter(|d| !d.is_zero())
        .unwrap_or(Duration::from_secs(20));
    Ok((PathBuf::from(spp), poll))
}

impl Runner {
    fn new(lab_dir: &Path, node: &str) -> Result<Runner> {
        let st = LabState::load(lab_dir)?;
        let n = st.node(node)?;
        let paths = NodePaths::new(&n.dir);
        let (manifests, poll) = read_kubelet_config(&paths.kubelet_config())?;
        Ok(Runner {
            lab_dir: lab_dir.to_path_buf(),
            node: node.to_string(),
            paths,
            images: st.images.clone(),
            manifests,
            poll,
            slots: BTreeMap::new(),
            reported: BTreeSet::new(),
            dirty: true,
        })
    }

    fn report(&mut self, seen: &mut BTreeSet<String>, msg: String) {
        if !self.reported.contains(&msg) {
            util::log(&msg);
        }
        seen.insert(msg);
    }

    /// Lists the static pod path like the kubelet's file source and returns the wanted pods;
    /// `None` when the directory cannot be read for another reason than not existing (the
    /// kubelet then keeps what runs; a missing directory means no static pods).
    fn scan(&mut self) -> Option<BTreeMap<String, Desired>> {
        let mut seen = BTreeSet::new();
        let mut wanted: BTreeMap<String, Desired> = BTreeMap::new();
        let mut names: Vec<String> = match fs::read_dir(&self.manifests) {
            Ok(rd) => rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let m = format!(
                    "static pod path {} does not exist: no static pods",
                    self.manifests.display()
                );
                self.report(&mut seen, m);
                Vec::new()
            }
            Err(e) => {
                let m = format!(
                    "cannot list static pod path {}: {e}; keeping the pods as they are",
                    self.manifests.display()
                );
                self.report(&mut seen, m);
                self.reported = seen;
                return None;
            }
        };
        names.sort();
        for name in names {
            let path = self.manifests.join(&name);
            let meta = match fs::metadata(&path) {
                Ok(m) => m,
                Err(_) => continue,
            };
            if meta.is_dir() {
                let m = format!(
                    "provided manifest path {} is a directory, not recursing into it",
                    path.display()
                );
                self.report(&mut seen, m);
                continue;
            }
            if !meta.is_file() {
                let m = format!(
                    "manifest path {} is not a directory or file, ignoring",
                    path.display()
                );
                self.report(&mut seen, m);
                continue;
            }
            let bytes = match fs::read(&path) {
                Ok(b) => b,
                Err(e) => {
                    let m = format!("could not read manifest file {}: {e}", path.display());
                    self.report(&mut seen, m);
                    continue;
                }
            };
            let text = String::from_utf8_lossy(&bytes);
            let spec = match parse_pod(&text) {
                Ok(s) => s,
                Err(e) => {
                    let m = format!("could not process manifest file {}: {e:#}", path.display());
                    self.report(&mut seen, m);
                    continue;
                }
            };
            if let Some(first) = wanted.get(&spec.name) {
                let m = format!(
                    "pod {} from {} failed validation due to duplicate pod name (already defined by {}), ignoring",
                    spec.name,
                    path.display(),
                    first.file.display()
                );
                self.report(&mut seen, m);
                continue;
            }
            let canonical = canonical_json(
                serde_yaml::from_str::<serde_json::Value>(&text).unwrap_or_default(),
            );
            let spec_hash = util::sha256_hex(
                format!(
                    "{}\nfile:{}",
                    serde_json::to_string(&canonical).unwrap_or_default(),
                    path.display()
                )
                .as_bytes(),
            );
            wanted.insert(
                spec.name.clone(),
                Desired {
                    file: path,
                    sha256: util::sha256_hex(&bytes),
                    spec_hash,
                    spec,
                },
            );
        }
        self.reported = seen;
        Some(wanted)
    }

    fn apply(&mut self, wanted: BTreeMap<String, Desired>) {
        for (name, slot) in self.slots.iter_mut() {
            if !wanted.contains_key(name) && slot.desired.is_some() {
                slot.desired = None;
            }
        }
        for (name, d) in wanted {
            let slot = self.slots.entry(name).or_default();
            let changed = slot
                .desired
                .as_ref()
                .map(|o| o.spec_hash != d.spec_hash)
                .unwrap_or(true);
            if changed {
                // A new pod (new UID): fresh restart count and back-off.
                let same_as_running = slot
                    .running
                    .as_ref()
                    .is_some_and(|r| r.spec_hash == d.spec_hash);
                if !same_as_running {
                    slot.restarts = 0;
                }
                slot.backoff = None;
                slot.next_start = None;
                slot.last_error = None;
                self.dirty = true;
            }
            slot.desired = Some(d);
        }
    }

    fn start(&self, name: &str, d: &Desired) -> Result<Running> {
        let spec = &d.spec;
        let bin_dir = self.images.get(&spec.image).with_context(|| {
            format!(
                "image {} is not known to the lab (ErrImagePull); known images: {}",
                spec.image,
                self.images.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })?;
        let cmd0 = &spec.command[0];
        let base = Path::new(cmd0)
            .file_name()
            .with_context(|| format!("command[0] {cmd0:?} names no executable"))?;
        let exe = bin_dir.join(base);
        if !exe.exists() {
            bail!(
                "executable {cmd0} not found in image {} ({} does not exist)",
                spec.image,
                exe.display()
            );
        }
        prepare_volumes(spec)?;
        let args: Vec<String> = spec.command[1..]
            .iter()
            .map(|a| translate_arg(spec, a))
            .collect();
        let log_path = self.paths.logs().join(format!("{name}.log"));
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        let mut argv = vec![exe.display().to_string()];
        argv.extend(args.iter().cloned());
        {
            use std::io::Write;
            let mut l = &log;
            let _ = writeln!(
                l,
                "{} etcd-recover-lab runner: starting container {name} of {} : {}",
                util::rfc3339_now(),
                d.file.display(),
                argv.join(" ")
            );
        }
        let cwd = spec
            .working_dir
            .as_deref()
            .map(|w| translate(spec, w))
            .unwrap_or_else(|| "/".to_string());
        let mut cmd = Command::new(&exe);
        cmd.args(&args)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("HOME", "/root")
            .env("HOSTNAME", &self.node)
            .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env(util::MARKER_ENV, &self.lab_dir)
            .env(util::NODE_ENV, &self.node)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .context("cannot duplicate the log file handle")?,
            )
            .stderr(log);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", exe.display()))?;
        let pid = child.id() as i32;
        let proc = ProcId::of(pid).unwrap_or(ProcId { pid, start_time: 0 });
        util::log(format!(
            "started pod {name} (pid {pid}) from {}: {}",
            d.file.display(),
            argv.join(" ")
        ));
        Ok(Running {
            proc,
            child: Some(child),
            file: d.file.clone(),
            sha256: d.sha256.clone(),
            spec_hash: d.spec_hash.clone(),
            image: spec.image.clone(),
            argv,
            started_at: util::rfc3339_now(),
            started: Instant::now(),
            grace: spec.grace,
            terminating: None,
            killed: false,
        })
    }

    /// One supervision step for every pod.
    fn tick(&mut self) {
        let now = Instant::now();
        let names: Vec<String> = self.slots.keys().cloned().collect();
        for name in names {
            let mut start_req: Option<Desired> = None;
            {
                let Some(slot) = self.slots.get_mut(&name) else {
                    continue;
                };
                // Reap.
                if let Some(r) = slot.running.as_mut() {
                    let exited: Option<String> = match r.child.as_mut() {
                        Some(c) => match c.try_wait() {
                            Ok(Some(status)) => Some(format!("{status}")),
                            Ok(None) => None,
                            Err(e) => Some(format!("wait failed: {e}")),
                        },
                        None => (!r.proc.alive()).then(|| "exited (adopted process)".to_string()),
                    };
                    if let Some(how) = exited {
                        // Whatever is left of the container's process group goes too.
                        util::signal_group(r.proc.pid, Signal::SIGKILL);
                        let ran = r.started.elapsed();
                        let planned = r.terminating.is_some();
                        util::log(format!(
                            "pod {name} (pid {}) {how} after {:.1}s{}",
                            r.proc.pid,
                            ran.as_secs_f64(),
                            if planned {
                                " (stopped by the runner)"
                            } else {
                                ""
                            }
                        ));
                        slot.running = None;
                        self.dirty = true;
                        if !planned {
                            let b = if ran >= BACKOFF_RESET_AFTER {
                                BACKOFF_START
                            } else {
                                slot.backoff.unwrap_or(BACKOFF_START)
                            };
                            slot.next_start = Some(now + b);
                            slot.backoff = Some((b * 2).min(BACKOFF_CAP));
                            slot.restarts += 1;
                            util::log(format!(
                                "pod {name}: restarting in {:.0}s (back-off)",
                                b.as_secs_f64()
                            ));
                        }
                    }
                }
                // Stop what is no longer wanted, or wanted differently.
                if let Some(r) = slot.running.as_mut() {
                    let keep = slot
                        .desired
                        .as_ref()
                        .is_some_and(|d| d.spec_hash == r.spec_hash);
                    if !keep && r.terminating.is_none() {
                        let why = if slot.desired.is_some() {
                            "its manifest changed"
                        } else {
                            "its manifest is gone"
                        };
                        util::log(format!(
                            "stopping pod {name} (pid {}): {why}; SIGTERM, SIGKILL after {}s",
                            r.proc.pid,
                            r.grace.as_secs()
                        ));
                        util::signal_group(r.proc.pid, Signal::SIGTERM);
                        r.terminating = Some(now + r.grace);
                        self.dirty = true;
                    }
                    if let Some(deadline) = r.terminating {
                        if now >= deadline && !r.killed {
                            util::log(format!(
                                "pod {name} (pid {}) outlived its grace period: SIGKILL",
                                r.proc.pid
                            ));
                            util::signal_group(r.proc.pid, Signal::SIGKILL);
                            r.killed = true;
                        }
                    }
                }
                if slot.running.is_none() {
                    if let Some(d) = slot.desired.as_ref() {
                        if slot.next_start.is_none_or(|t| now >= t) {
                            start_req = Some(d.clone());
                        }
                    }
                }
            }
            if let Some(d) = start_req {
                let res = self.start(&name, &d);
                let Some(slot) = self.slots.get_mut(&name) else {
                    continue;
                };
                self.dirty = true;
                match res {
                    Ok(r) => {
                        slot.running = Some(r);
                        slot.next_start = None;
                        slot.last_error = None;
                    }
                    Err(e) => {
                        let b = slot.backoff.unwrap_or(BACKOFF_START);
                        util::log(format!(
                            "pod {name}: cannot start container: {e:#}; retrying in {}s",
                            b.as_secs()
                        ));
                        slot.last_error = Some(format!("{e:#}"));
                        slot.next_start = Some(now + b);
                        slot.backoff = Some((b * 2).min(BACKOFF_CAP));
                        slot.restarts += 1;
                    }
                }
            }
        }
        let before = self.slots.len();
        self.slots
            .retain(|_, s| s.desired.is_some() || s.running.is_some());
        if self.slots.len() != before {
            self.dirty = true;
        }
    }

    fn write_status(&mut self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let mut out = BTreeMap::new();
        for (name, slot) in &self.slots {
            let st = match (&slot.running, &slot.desired) {
                (Some(r), _) => PodStatus {
                    pid: Some(r.proc.pid),
                    start_time: Some(r.proc.start_time),
                    state: if r.terminating.is_some() {
                        "terminating"
                    } else {
                        "running"
                    }
                    .to_string(),
                    manifest: r.file.clone(),
                    manifest_sha256: r.sha256.clone(),
                    spec_hash: r.spec_hash.clone(),
                    started_at: Some(r.started_at.clone()),
                    restarts: slot.restarts,
                    image: r.image.clone(),
                    argv: r.argv.clone(),
                    last_error: slot.last_error.clone(),
                },
                (None, Some(d)) => PodStatus {
                    pid: None,
                    start_time: None,
                    state: "waiting".to_string(),
                    manifest: d.file.clone(),
                    manifest_sha256: d.sha256.clone(),
                    spec_hash: d.spec_hash.clone(),
                    started_at: None,
                    restarts: slot.restarts,
                    image: d.spec.image.clone(),
                    argv: Vec::new(),
                    last_error: slot.last_error.clone(),
                },
                (None, None) => continue,
            };
            out.insert(name.clone(), st);
        }
        let data = serde_json::to_vec_pretty(&out)?;
        util::write_atomic(&self.paths.pod_status(), &data, 0o644)?;
        self.dirty = false;
        Ok(())
    }

    /// Adopts the still-running pods recorded by a previous runner.
    fn adopt(&mut self) {
        for (name, ps) in read_status(&self.paths.pod_status()) {
            let (Some(pid), Some(start_time)) = (ps.pid, ps.start_time) else {
                continue;
            };
            let proc = ProcId { pid, start_time };
            if !proc.alive() {
                continue;
            }
            util::log(format!(
                "found running pod {name} (pid {pid}) from {}",
                ps.manifest.display()
            ));
            let slot = self.slots.entry(name).or_default();
            slot.restarts = ps.restarts;
            slot.running = Some(Running {
                proc,
                child: None,
                file: ps.manifest,
                sha256: ps.manifest_sha256,
                spec_hash: ps.spec_hash,
                image: ps.image,
                argv: ps.argv,
                started_at: ps.started_at.unwrap_or_else(util::rfc3339_now),
                started: Instant::now(),
                grace: DEFAULT_GRACE,
                terminating: if ps.state == "terminating" {
                    Some(Instant::now() + DEFAULT_GRACE)
                } else {
                    None
                },
                killed: false,
            });
        }
    }
}

/// Entry point of `etcd-recover-lab runner`: runs until SIGTERM/SIGINT, leaving pods running.
pub fn run(lab_dir: &Path, node: &str) -> Result<()> {
    // Own session and process group: stopping or restarting the runner never touches pods,
    // and a closing terminal or SSH session does not take the runner down.
    let _ = nix::unistd::setsid();
    let mut r = Runner::new(lab_dir, node)?;
    util::mkdir(&r.paths.run())?;
    util::mkdir(&r.paths.logs())?;
    let lock_path = r.paths.runner_lock();
    let lock_file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    let _lock = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock).map_err(|_| {
        anyhow::anyhow!("another runner for {node} holds {} (stop it first: `etcd-recover-lab fault --dir {} --node {node} stop-runner`)",
            lock_path.display(), lab_dir.display())
    })?;
    util::log(format!(
        "runner for {node} starting (pid {}): static pod path {}, poll every {}",
        std::process::id(),
        r.manifests.display(),
        util::format_duration(r.poll)
    ));
    r.adopt();
    // Until the static pod path can be read, decide nothing (adopted pods keep running).
    let wanted = loop {
        if let Some(w) = r.scan() {
            break w;
        }
        std::thread::sleep(r.poll);
    };
    let adopted: Vec<String> = r
        .slots
        .iter()
        .filter(|(n, s)| {
            s.running.is_some()
                && wanted.get(*n).map(|d| &d.spec_hash) == s.running.as_ref().map(|r| &r.spec_hash)
        })
        .map(|(n, s)| {
            format!(
                "{n} (pid {})",
                s.running.as_ref().map(|r| r.proc.pid).unwrap_or(0)
            )
        })
        .collect();
    if !adopted.is_empty() {
        util::log(format!(
            "adopted running pods with unchanged manifests: {}",
            adopted.join(", ")
        ));
    }
    r.apply(wanted);
    r.tick();
    r.write_status()?;
    util::write_atomic(
        &r.paths.run().join("runner.ready"),
        format!("{}\n", std::process::id()).as_bytes(),
        0o644,
    )?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runner's event loop")?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot handle SIGTERM")?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .context("cannot handle SIGINT")?;
        let mut next_scan = Instant::now() + r.poll;
        let mut watch = Watch::new(&r.manifests);
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = tokio::time::sleep(TICK) => {}
            }
            if watch.changed(&r.manifests) || Instant::now() >= next_scan {
                if let Some(wanted) = r.scan() {
                    r.apply(wanted);
                }
                next_scan = Instant::now() + r.poll;
            }
            r.tick();
            if let Err(e) = r.write_status() {
                util::log(format!("cannot write pod status: {e:#}"));
            }
        }
        anyhow::Ok(())
    })?;
    r.dirty = true;
    r.write_status()?;
    util::log(format!("runner for {node} stopping; pods keep running"));
    Ok(())
}

/// An inotify watch on the static pod path, as the kubelet's file source keeps one. When the
/// directory is missing (or was replaced), it is watched again from the next check on;
/// meanwhile the periodic listing alone notices changes.
struct Watch {
    inotify: Option<nix::sys::inotify::Inotify>,
    watching: bool,
}

impl Watch {
    fn new(dir: &Path) -> Watch {
        use nix::sys::inotify::{InitFlags, Inotify};
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(|e| {
                util::log(format!(
                    "no inotify ({e}): changes are noticed by polling only"
                ))
            })
            .ok();
        let mut w = Watch {
            inotify,
            watching: false,
        };
        w.arm(dir);
        w
    }

    fn arm(&mut self, dir: &Path) {
        use nix::sys::inotify::AddWatchFlags as F;
        if let Some(i) = &self.inotify {
            let mask = F::IN_CREATE
                | F::IN_DELETE
                | F::IN_MOVED_FROM
                | F::IN_MOVED_TO
                | F::IN_CLOSE_WRITE
                | F::IN_MODIFY
                | F::IN_ATTRIB
                | F::IN_DELETE_SELF
                | F::IN_MOVE_SELF;
            self.watching = i.add_watch(dir, mask).is_ok();
        }
    }

    /// True when something in the directory changed since the last call.
    fn changed(&mut self, dir: &Path) -> bool {
        use nix::sys::inotify::AddWatchFlags as F;
        let Some(i) = &self.inotify else {
            return false;
        };
        let mut changed = false;
        let mut lost = false;
        while let Ok(events) = i.read_events() {
            if events.is_empty() {
                break;
            }
            changed = true;
            lost |= events.iter().any(|e| {
                e.mask
                    .intersects(F::IN_IGNORED | F::IN_DELETE_SELF | F::IN_MOVE_SELF)
            });
        }
        if lost || !self.watching {
            self.arm(dir);
            changed |= self.watching;
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watch_notices_changes_and_a_replaced_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("manifests");
        fs::create_dir(&dir).unwrap();
        let mut w = Watch::new(&dir);
        assert!(!w.changed(&dir));
        fs::write(dir.join("etcd.yaml"), "x").unwrap();
        assert!(w.changed(&dir));
        assert!(!w.changed(&dir));
        fs::rename(dir.join("etcd.yaml"), tmp.path().join("etcd.yaml")).unwrap();
        assert!(w.changed(&dir));
        // The directory itself is replaced: the new one is watched.
        fs::remove_dir_all(&dir).unwrap();
        fs::create_dir(&dir).unwrap();
        assert!(w.changed(&dir));
        assert!(!w.changed(&dir));
        fs::write(dir.join("kube-apiserver.yaml"), "x").unwrap();
        assert!(w.changed(&dir));
    }

    const POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: etcd
spec:
  containers:
  - command:
    - etcd
    - --data-dir=/var/lib/etcd
    - --cert-file=/etc/kubernetes/pki/etcd/server.crt
    - /etc/kubernetes/pki/etcd
    - --name=x
    - --listen=https://1.2.3.4:2379
    image: registry.k8s.io/etcd:3.5.1-0
    volumeMounts:
    - mountPath: /var/lib/etcd
      name: etcd-data
    - mountPath: /etc/kubernetes/pki/etcd
      name: etcd-certs
    - mountPath: /etc/kubernetes
      name: k8s
  terminationGracePeriodSeconds: 3
  volumes:
  - hostPath:
      path: /lab/etc/kubernetes/pki/etcd
      type: DirectoryOrCreate
    name: etcd-certs
  - hostPath:
      path: /lab/data-new
    name: etcd-data
  - hostPath:
      path: /lab/etc/kubernetes
    name: k8s
";

    #[test]
    fn parses_and_translates_paths() {
        let spec = parse_pod(POD).expect("parse");
        assert_eq!(spec.name, "etcd");
        assert_eq!(spec.grace, Duration::from_secs(3));
        let args: Vec<String> = spec.command[1..]
            .iter()
            .map(|a| translate_arg(&spec, a))
            .collect();
        assert_eq!(
            args,
            vec![
                "--data-dir=/lab/data-new",
                "--cert-file=/lab/etc/kubernetes/pki/etcd/server.crt",
                "/lab/etc/kubernetes/pki/etcd",
                "--name=x",
                "--listen=https://1.2.3.4:2379",
            ]
        );
        // Not under any mount: unchanged.
        assert_eq!(translate(&spec, "/var/lib/etcdX"), "/var/lib/etcdX");
    }

    #[test]
    fn spec_hash_ignores_layout_and_key_order() {
        let a: serde_json::Value =
            serde_yaml::from_str("a: 1\nb: [x, {d: 1, c: 2}]\n").expect("yaml");
        let b: serde_json::Value =
            serde_yaml::from_str("# comment\nb:   [x, {c: 2, d: 1}]\na: 1\n").expect("yaml");
        let s = |v| serde_json::to_string(&canonical_json(v)).expect("json");
        assert_eq!(s(a), s(b));
    }

    #[test]
    fn rejects_non_pods() {
        assert!(parse_pod("kind: Deployment\n").is_err());
        assert!(parse_pod("a: [").is_err());
        assert!(parse_pod("kind: Pod\nmetadata:\n  name: x\nspec:\n  containers: []\n").is_err());
    }
}
