//! Istio's configuration API in Rust: the resources users write, read exactly as Istio reads
//! them (positions kept for every value), and validated as Istio's admission webhook validates
//! them.

pub mod de;
pub mod fidelity;
pub mod load;
pub mod path;
pub mod resource;
pub mod types;
pub mod validate;
pub mod yaml;

pub use load::{LoadResult, Loaded, Origin, Problem, Severity};
pub use path::FieldPath;
pub use resource::Resource;
