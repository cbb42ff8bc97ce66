pub mod control_plane;
pub mod demo;
pub mod monitor;
pub mod proxy;
pub mod status;
pub mod up;
pub mod validate;
pub mod xds_load;
