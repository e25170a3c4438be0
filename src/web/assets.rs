//! Embedded assets, served under a content-hash URL so browsers may cache them forever, and the
//! health check.

use super::routes::Params;
use super::App;
use crate::crypto;
use crate::error::{AppError, AppResult};
use rouille::{Request, Response};
use rust_embed::RustEmbed;
use std::sync::OnceLock;

#[derive(RustEmbed)]
#[folder = "assets/"]
struct Assets;

const STYLESHEET: &str = "carepost.css";

/// `/assets/carepost.<hash>.css`: the hash changes whenever the stylesheet does.
pub fn css_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| format!("/assets/{}", hashed_name(STYLESHEET)))
}

fn hashed_name(file: &str) -> String {
    let hash = Assets::get(file)
        .map(|f| crypto::hex(&f.metadata.sha256_hash())[..16].to_owned())
        .unwrap_or_default();
    match file.rsplit_once('.') {
        Some((stem, ext)) => format!("{stem}.{hash}.{ext}"),
        None => format!("{file}.{hash}"),
    }
}

pub fn serve(_app: &App, _request: &Request, params: &Params) -> AppResult<Response> {
    let requested = params.get(0);
    // Only the current hashed name of a known file is served.
    let file = Assets::iter()
        .find(|name| hashed_name(name) == requested)
        .ok_or(AppError::NotFound)?;
    let content = Assets::get(&file).ok_or(AppError::NotFound)?;
    let mime = match file.rsplit_once('.').map(|(_, ext)| ext) {
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    };
    Ok(Response::from_data(mime, content.data.into_owned())
        .with_additional_header("Cache-Control", "public, max-age=31536000, immutable"))
}

/// `GET /healthz`: 200 with the schema version when the database answers.
pub fn health(app: &App, _request: &Request, _params: &Params) -> AppResult<Response> {
    let conn = app.pool.get();
    conn.query_row("SELECT 1", [], |_| Ok(()))?;
    Ok(Response::from_data(
        "application/json",
        format!(
            "{{\"status\":\"ok\",\"schema_version\":{},\"version\":\"{}\"}}",
            app.schema_version,
            env!("CARGO_PKG_VERSION")
        ),
    ))
}
