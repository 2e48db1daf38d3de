//! Hosting connector processes: launching them on a private socket, the handshake,
//! heartbeats and their logs ([`process`]), and finding the plugins to launch ([`plugins`]).

pub mod plugins;
pub mod process;
