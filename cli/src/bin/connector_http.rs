//! The built-in `http` connector plugin as an executable of its own (see `builtin_plugins`).
fn main() {
    sluice_connector_sdk::main(sluice_connector_http::plugin());
}
