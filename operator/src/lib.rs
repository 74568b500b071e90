//! Mizzen's operator: watches Istio resources, Services and Namespaces into an [`index::Index`],
//! renders one proxy config per meshed namespace with the pure [`render`] module, and writes
//! ConfigMaps, status conditions and Events through a thin Kubernetes shell ([`apply`],
//! [`status`], [`reconcile`]), only while it holds the Lease ([`leader`]).

pub mod apply;
pub mod ca;
pub mod canary;
pub mod files;
pub mod hash;
pub mod index;
pub mod leader;
pub mod metrics;
pub mod reconcile;
pub mod render;
pub mod run;
pub mod status;
pub mod webhook_certs;

pub use index::Index;
pub use render::{RenderSettings, Rendered, Renderer, render};
