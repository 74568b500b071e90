//! The operator's side of the mesh CA: the root kept in the Secret `mizzen-ca` (or the user's
//! `cacerts`), rotated by [`keeper`] as the pure [`secret`] module plans, and the
//! CertificateSigningRequest [`signer`] that hands each node agent its intermediate CA. The
//! keeper publishes the signing authority to the signer on a watch channel; both act only
//! while the operator leads.

pub mod keeper;
pub mod secret;
pub mod signer;

pub use keeper::{AuthorityRx, AuthorityTx, KeeperSettings};
pub use signer::{Decision, SIGNER_NAME, SignerSettings, decide};
