//! One module per command.

pub mod bind;
pub mod buffers;
pub mod doctor;
pub mod info;
pub mod list;
