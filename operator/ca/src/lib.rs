//! The mesh certificate authority, as pure library code: the operator, the node agent and
//! `mizzenctl local` wire it to Secrets, the CertificateSigningRequest API and files.
//!
//! Chain: mesh root ([`root`]: generated, or the user's plug-in CA) → per-node intermediate
//! ([`node`]) → workload leaf ([`workload`]). [`rotation`] plans root rotation; [`local`] keeps a
//! root in a directory for the local mesh.
#![forbid(unsafe_code)]

pub mod authority;
pub mod local;
pub mod node;
pub mod root;
pub mod rotation;
pub mod workload;

pub use authority::{Authority, CaError, Issued};
pub use local::LocalCa;
pub use node::{DEFAULT_NODE_CA_TTL, node_ca_request};
pub use root::{DEFAULT_ROOT_VALIDITY, PluginCa, RootCa};
pub use rotation::{RotationPlan, RotationPolicy};
pub use workload::DEFAULT_WORKLOAD_TTL;
