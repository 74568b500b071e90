//! `networking.istio.io`: traffic routing and service registry resources.
pub mod gateway;
pub use gateway::{Gateway, GatewaySpec};
pub mod workload_entry;
pub use workload_entry::{WorkloadEntry, WorkloadEntrySpec};
pub mod destination_rule;
pub use destination_rule::{DestinationRule, DestinationRuleSpec};
pub mod service_entry;
pub use service_entry::{ServiceEntry, ServiceEntrySpec};
pub mod virtual_service;
pub use virtual_service::{VirtualService, VirtualServiceSpec};
pub mod sidecar;
pub use sidecar::{Sidecar, SidecarSpec};
