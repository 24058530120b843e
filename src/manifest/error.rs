//! Why a manifest was refused, and what to do about it.

use thiserror::Error;

/// A manifest could not be read, or could not be rewritten safely.
///
/// `Display` says what is wrong; [`ManifestError::hint`] says what the user can do.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The bytes are not UTF-8 text.
    #[error("the file is not UTF-8 text (invalid byte at offset {offset})")]
    NotUtf8 {
        /// Byte offset of the first invalid sequence.
        offset: usize,
    },
    /// Lines end in a bare CR (old Mac style) somewhere.
    #[error("line {line} ends in a bare carriage return (CR without LF)")]
    BareCarriageReturn {
        /// 1-based line of the first bare CR.
        line: usize,
    },
    /// The file is an unrendered template.
    #[error("the file is an unrendered template: line {line} contains `{marker}`")]
    Templated {
        /// The placeholder found.
        marker: String,
        /// 1-based line.
        line: usize,
    },
    /// The YAML does not parse.
    #[error("invalid YAML at line {line}, column {col}: {message}{}",
        .template_marker.as_ref().map(|m| format!(" (it also contains the placeholder `{m}`: an unrendered template?)")).unwrap_or_default())]
    InvalidYaml {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        col: usize,
        /// The parser's message.
        message: String,
        /// A template placeholder seen in the text, if any.
        template_marker: Option<String>,
    },
    /// Nothing but whitespace and comments.
    #[error("the file holds no YAML document")]
    Empty,
    /// More than one YAML document.
    #[error("the file holds more than one YAML document (the second starts at line {second_line}){}",
        .explicit_end_line.map(|l| format!("; line {l} is a `...` document-end marker with more text after it (an elided snippet?)")).unwrap_or_default())]
    MultipleDocuments {
        /// 1-based line where the second document starts.
        second_line: usize,
        /// The line of a `...` marker that closed the first document, if any.
        explicit_end_line: Option<usize>,
    },
    /// The same key twice in one mapping.
    #[error("key `{key}` appears twice in the same mapping (second time at line {line})")]
    DuplicateKey {
        /// The key.
        key: String,
        /// 1-based line of the second occurrence.
        line: usize,
    },
    /// A YAML merge key (`<<`), which this tool does not interpret.
    #[error("line {line} uses a YAML merge key (`<<`)")]
    MergeKey {
        /// 1-based line.
        line: usize,
    },
    /// An alias to an undefined anchor.
    #[error("line {line} refers to an undefined anchor")]
    UnknownAlias {
        /// 1-based line.
        line: usize,
    },
    /// The document is not a Pod.
    #[error("this is a `{kind}` (apiVersion `{api_version}`), not a static Pod manifest")]
    NotAPod {
        /// The `kind` found (empty when missing).
        kind: String,
        /// The `apiVersion` found (empty when missing).
        api_version: String,
    },
    /// The document is a Pod as returned by the API server, not a manifest file.
    #[error("this is a Pod as returned by the API server (`kubectl get -o yaml`), not a static-pod manifest: {evidence}")]
    ApiDump {
        /// What gave it away.
        evidence: String,
    },
    /// A field has the wrong shape.
    #[error("`{field}` {problem}")]
    BadField {
        /// Dotted path of the field.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The Pod has no containers.
    #[error("the Pod has no containers")]
    NoContainers,
    /// No container runs etcd.
    #[error("no container runs etcd (containers: {names})")]
    NoEtcdContainer {
        /// Container names, comma-separated.
        names: String,
    },
    /// Several containers could be the etcd one.
    #[error("several containers could be the etcd one: {names}")]
    AmbiguousEtcdContainer {
        /// Container names, comma-separated.
        names: String,
    },
    /// etcd is started through a shell, so its flags cannot be read.
    #[error("etcd is started through a shell (`{program} -c ...`), so its flags cannot be read reliably")]
    EtcdThroughShell {
        /// The shell.
        program: String,
    },
    /// etcd reads a config file, which overrides every flag.
    #[error("etcd is started with `--config-file={path}`, which makes it ignore all other flags")]
    EtcdConfigFile {
        /// The config file path (inside the container).
        path: String,
    },
    /// No `--data-dir`.
    #[error("etcd has no `--data-dir` flag (nor ETCD_DATA_DIR): it would keep its data in `<name>.etcd` under its working directory, which no hostPath backs")]
    NoDataDir,
    /// A relative `--data-dir`.
    #[error("`--data-dir={dir}` is relative to etcd's working directory, which this tool cannot map to the host")]
    RelativeDataDir {
        /// The value.
        dir: String,
    },
    /// `--data-dir` given more than once with different values.
    #[error("`--data-dir` is given more than once with different values: {values}")]
    ConflictingDataDir {
        /// The values, comma-separated.
        values: String,
    },
    /// A container path is not under any volumeMount.
    #[error("`{path}` is not under any volumeMount of container `{container}`: it lives in the container's own filesystem, not on the host")]
    NoMount {
        /// The container path.
        path: String,
        /// The container.
        container: String,
    },
    /// Several volumeMounts are equally good for a path.
    #[error("`{path}` is under several volumeMounts at `{mount_path}` (volumes {volumes}); which one wins is undefined")]
    AmbiguousMount {
        /// The container path.
        path: String,
        /// The shared mountPath.
        mount_path: String,
        /// The volume names, comma-separated.
        volumes: String,
    },
    /// A volumeMount names a volume that does not exist.
    #[error(
        "volumeMount `{mount_path}` uses volume `{volume}`, which `spec.volumes` does not define"
    )]
    MissingVolume {
        /// The volume name.
        volume: String,
        /// The mountPath.
        mount_path: String,
    },
    /// Two volumes share a name.
    #[error("`spec.volumes` defines volume `{volume}` more than once")]
    DuplicateVolume {
        /// The volume name.
        volume: String,
    },
    /// The volume behind a path is not a hostPath.
    #[error("`{path}` is backed by volume `{volume}`, which is a `{source_kind}` volume, not a hostPath")]
    NotHostPath {
        /// The container path.
        path: String,
        /// The volume name.
        volume: String,
        /// The kind of volume (`persistentVolumeClaim`, `emptyDir`, ...).
        source_kind: String,
    },
    /// The data volume is mounted at a parent of `--data-dir`, so changing it moves more than
    /// the data.
    #[error("volume `{volume}` is mounted at `{mount_path}`, a parent of `--data-dir={data_dir}`; changing its hostPath would move everything under `{mount_path}`, not just etcd's data")]
    DataMountIsParent {
        /// The volume name.
        volume: String,
        /// Its mountPath.
        mount_path: String,
        /// The data dir.
        data_dir: String,
    },
    /// The data volume is mounted with a subPath.
    #[error("volume `{volume}` is mounted with `subPath: {sub_path}`; the data directory is not the hostPath itself")]
    DataSubPath {
        /// The volume name.
        volume: String,
        /// The subPath.
        sub_path: String,
    },
    /// The data volume is also mounted somewhere else.
    #[error("volume `{volume}` is also mounted at `{other}`; changing its hostPath would move that mount too")]
    VolumeMountedElsewhere {
        /// The volume name.
        volume: String,
        /// The other mount (`container:mountPath`).
        other: String,
    },
    /// The hostPath scalar cannot be edited in place.
    #[error("the hostPath of volume `{volume}` (line {line}) cannot be edited safely: {reason}")]
    UneditableScalar {
        /// The volume name.
        volume: String,
        /// 1-based line.
        line: usize,
        /// Why.
        reason: String,
    },
    /// The requested new hostPath is not acceptable.
    #[error("invalid new data hostPath `{path}`: {reason}")]
    InvalidNewPath {
        /// The value given (control characters escaped).
        path: String,
        /// Why.
        reason: String,
    },
    /// The hostPath already has the requested value.
    #[error("the data hostPath is already `{path}`; nothing to change")]
    Unchanged {
        /// The path.
        path: String,
    },
    /// The structural comparison found a difference other than the intended one.
    #[error("refusing the rewrite: re-parsing the result shows a change other than the data hostPath ({detail})")]
    ProofFailed {
        /// What differed.
        detail: String,
    },
}

impl ManifestError {
    /// What the user can do about this error.
    pub fn hint(&self) -> String {
        use ManifestError::*;
        match self {
            NotUtf8 { .. } => "save the manifest as UTF-8; the kubelet and this tool only read UTF-8".into(),
            BareCarriageReturn { .. } => "convert the line endings to LF (or CRLF), e.g. `tr '\\r' '\\n'`, after checking the file is what the kubelet runs".into(),
            Templated { .. } => "point the tool at the rendered manifest the kubelet actually runs (in the kubelet's staticPodPath), not at its template".into(),
            InvalidYaml { .. } => "the kubelet cannot run this file either; use the manifest from the node's staticPodPath".into(),
            Empty => "point the tool at the etcd static-pod manifest (usually /etc/kubernetes/manifests/etcd.yaml)".into(),
            MultipleDocuments { .. } => "a static-pod manifest holds exactly one Pod; split the file, or use the node's real manifest".into(),
            DuplicateKey { .. } => "remove the duplicate key; which value wins depends on the parser".into(),
            MergeKey { .. } | UnknownAlias { .. } => "expand the YAML anchors/merge keys by hand so every field is written out".into(),
            NotAPod { .. } => "only static Pods (apiVersion v1, kind Pod) run from the kubelet's staticPodPath; point the tool at that file".into(),
            ApiDump { .. } => "use the file from the node's staticPodPath (e.g. /etc/kubernetes/manifests/etcd.yaml), not the API server's view of the mirror pod".into(),
            BadField { .. } | NoContainers => "fix the manifest so the kubelet accepts it, or use the node's real manifest".into(),
            NoEtcdContainer { .. } | AmbiguousEtcdContainer { .. } => "name the etcd container `etcd`, or make its command start with `etcd`".into(),
            EtcdThroughShell { .. } => "run etcd directly (`command: [etcd, --flag=value, ...]`) so its flags are visible".into(),
            EtcdConfigFile { .. } => "this tool reads etcd's settings from its flags; config-file setups are not supported".into(),
            NoDataDir => "add `--data-dir=/var/lib/etcd` (and a hostPath volume mounted there) so the data survives the container".into(),
            RelativeDataDir { .. } => "use an absolute `--data-dir`".into(),
            ConflictingDataDir { .. } => "keep a single `--data-dir` flag".into(),
            NoMount { .. } => "mount a hostPath volume at that path".into(),
            AmbiguousMount { .. } => "keep one volumeMount per mountPath".into(),
            MissingVolume { .. } | DuplicateVolume { .. } => "fix `spec.volumes` so every mounted volume is defined exactly once".into(),
            NotHostPath { .. } => "this tool restores etcd data on the node's disk; the data must be on a hostPath volume".into(),
            DataMountIsParent { .. } | DataSubPath { .. } | VolumeMountedElsewhere { .. } => "restore into the existing data directory instead (swap `member/`), or edit the manifest by hand".into(),
            UneditableScalar { .. } => "write the hostPath as a plain `path: /var/lib/etcd` line, or edit the manifest by hand".into(),
            InvalidNewPath { .. } => "give an absolute, normalised directory path such as /var/lib/etcd-restored".into(),
            Unchanged { .. } => "nothing to do; the manifest already points at that directory".into(),
            ProofFailed { .. } => "edit the manifest by hand; this file has a layout the tool cannot change safely".into(),
        }
    }

    /// Converts into an `anyhow` error carrying [`ManifestError::hint`] as a [`crate::error::Hint`].
    pub fn into_anyhow(self) -> anyhow::Error {
        let hint = self.hint();
        anyhow::Error::new(self).context(crate::error::Hint(hint))
    }
}
