//! Step types: one file per type, each the whole story of that step. A step type says which
//! fields a playbook gives it (its spec, deserialized from the playbook), which values it refuses
//! ([`Step::validate`]), what it needs from earlier stages and what it brings about
//! ([`Step::rules`], from which the playbook's safety order follows), which actions it takes on
//! which nodes and in which order, with their undo ([`Step::plan`]), and, for actions of its
//! own ([`StepAction`]), how they are executed ([`execute`]).
//!
//! Adding a step type: a new file here with its spec struct and `impl Step`, and one line in
//! the `step_types!` list below (docs/architecture.md walks through it).

use serde::{Deserialize, Serialize};

use crate::action::StepAction;

mod exec;
pub mod rules;
mod static_pods;
mod step;

pub use command::{When, INVENTORY_COMMANDS};
pub use exec::{poll, Exec, Wait};
pub use kubeadm_config::set_kubeadm_data_dir;
pub use rules::{Condition, Rule};
pub use step::{NodeCx, PlanCx, Planned, Site, Step};

/// Declares the step types, one line each: the playbook's `type:` name, and the file and spec
/// struct of the type. Makes the file a module, the spec a variant of [`StepSpec`] and the
/// dispatch to its [`Step`] implementation.
macro_rules! step_types {
    ($($name:literal => $module:ident::$spec:ident,)*) => {
        $(
            mod $module;
            pub use $module::$spec;
        )*

        /// A step of a built-in type, as a playbook writes it. `type:` selects the variant;
        /// the fields are the step type's spec.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "type", deny_unknown_fields)]
        pub enum StepSpec {
            $(
                #[doc = concat!("A `", $name, "` step; see [`", stringify!($spec), "`].")]
                #[serde(rename = $name)]
                $spec($spec),
            )*
        }

        /// Every step type name, for error messages and docs.
        pub const STEP_TYPES: &[&str] = &[$($name),*];

        impl StepSpec {
            /// The step type as written in the playbook (`stop-static-pods`, ...).
            pub fn type_name(&self) -> &'static str {
                match self {
                    $(StepSpec::$spec(_) => $name,)*
                }
            }

            /// The step type's implementation.
            pub fn step(&self) -> &dyn Step {
                match self {
                    $(StepSpec::$spec(spec) => spec,)*
                }
            }
        }
    };
}

step_types! {
    "preflight" => preflight::Preflight,
    "stage-snapshot" => stage_snapshot::StageSnapshot,
    "stop-static-pods" => stop_static_pods::StopStaticPods,
    "restore" => restore::Restore,
    "rewrite-manifest" => rewrite_manifest::RewriteManifest,
    "start-static-pods" => start_static_pods::StartStaticPods,
    "wait-etcd-healthy" => wait_etcd_healthy::WaitEtcdHealthy,
    "wait-apiserver-ready" => wait_apiserver_ready::WaitApiserverReady,
    "command" => command::Command,
    "kubeadm-config" => kubeadm_config::KubeadmConfig,
    "finish" => finish::Finish,
}

/// Executes an action that belongs to a step type (the engine runs every other action with its
/// own primitives). `node` is the node the step runs on, `None` for a cluster step. Returns
/// `true` when the action was found already done.
pub async fn execute(
    action: &StepAction,
    node: Option<&str>,
    cx: &dyn Exec,
) -> anyhow::Result<bool> {
    match action {
        StepAction::Restore(a) => restore::execute(a, node, cx).await,
        StepAction::WaitEtcdHealthy(a) => wait_etcd_healthy::execute(a, cx).await,
        StepAction::WaitApiserverReady(a) => wait_apiserver_ready::execute(a, cx).await,
        StepAction::KubeadmConfig(a) => kubeadm_config::execute(a, cx).await,
    }
}
