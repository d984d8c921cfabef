//! The live view's page, compiled into the binary: nothing is fetched from
//! anywhere but this server.

pub const INDEX_HTML: &str = include_str!("assets/index.html");
pub const APP_JS: &str = include_str!("assets/app.js");
pub const APP_CSS: &str = include_str!("assets/app.css");
pub const FAVICON_SVG: &str = include_str!("assets/favicon.svg");
