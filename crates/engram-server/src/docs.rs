//! The interactive API page at `/docs` (Swagger UI) over `/openapi.json`.
//!
//! Its assets come from the `swagger-ui-dist` package of the npm registry,
//! fetched by `scripts/fetch-swagger-ui.sh` and compiled into the binary
//! (`build.rs`, from `ENGRAM_SWAGGER_UI_DIR`): nothing is loaded from a CDN
//! at run time. A build without them answers `/docs` with 503
//! `docs_unavailable` and says how to get them.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use engram_core::Code;

use crate::error::ApiError;
use crate::AppState;

include!(concat!(env!("OUT_DIR"), "/swagger_ui.rs"));

/// The page: Swagger UI on this server's document, sending the key given
/// under "Authorize" as a bearer token.
const INDEX: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>engram API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script>
</body>
</html>
"#;

/// Kept out of the page so that a strict Content-Security-Policy needs no
/// inline script.
const INIT: &str = r##"window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  persistAuthorization: true,
  tryItOutEnabled: true,
  defaultModelsExpandDepth: 0,
});
"##;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/docs", get(index))
        .route("/docs/", get(index))
        .route("/docs/{file}", get(asset))
}

fn unavailable() -> Response {
    ApiError::new(
        Code::DocsUnavailable,
        "this build has no API page assets: run scripts/fetch-swagger-ui.sh and build again \
         (the document itself is at /openapi.json)",
    )
    .into_response()
}

async fn index() -> Response {
    if ASSETS.is_empty() {
        return unavailable();
    }
    typed(INDEX.as_bytes(), "text/html; charset=utf-8")
}

async fn asset(Path(file): Path<String>) -> Response {
    if file == "init.js" && !ASSETS.is_empty() {
        return typed(INIT.as_bytes(), "text/javascript; charset=utf-8");
    }
    match ASSETS.iter().find(|(name, _)| *name == file) {
        Some((name, bytes)) => {
            let kind = if name.ends_with(".css") {
                "text/css; charset=utf-8"
            } else if name.ends_with(".js") {
                "text/javascript; charset=utf-8"
            } else if name.ends_with(".png") {
                "image/png"
            } else {
                "application/octet-stream"
            };
            typed(bytes, kind)
        }
        None if ASSETS.is_empty() => unavailable(),
        None => ApiError::new(Code::RouteNotFound, "no such file").into_response(),
    }
}

fn typed(body: &'static [u8], kind: &'static str) -> Response {
    let mut res = (StatusCode::OK, body).into_response();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    res
}
