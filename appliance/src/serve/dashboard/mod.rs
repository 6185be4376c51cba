//! The web dashboard: one page (`/`, also `/ui/`) with its script and style sheet (`/ui/app.js`,
//! `/ui/style.css`), plain HTML, CSS and JavaScript embedded in the binary (no build step, no
//! CDN). The files need no token; the page asks for the API token, keeps it in the tab's
//! `sessionStorage` and sends it as `Authorization: Bearer` on every API call, so the page
//! can do nothing the API would not let its user do.
//!
//! The page builds its views with DOM calls and text nodes only (never `innerHTML`), and the
//! answers carry a Content-Security-Policy that allows no inline script, so a board name, a job
//! name or a log line cannot run as code.

use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::api::error::ApiError;

const INDEX_HTML: &str = include_str!("static/index.html");
const APP_JS: &str = include_str!("static/app.js");
const STYLE_CSS: &str = include_str!("static/style.css");

/// Scripts and styles from the appliance only; `blob:` for the SD-card image the page fetched.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self' blob:; object-src 'none'; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

/// The dashboard's routes (outside `/api/v1`, no token).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/ui", get(index))
        .route("/ui/", get(index))
        .route("/ui/{file}", get(file))
}

fn answer(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    answer("text/html; charset=utf-8", INDEX_HTML)
}

async fn file(Path(name): Path<String>) -> Response {
    match name.as_str() {
        "index.html" => answer("text/html; charset=utf-8", INDEX_HTML),
        "app.js" => answer("text/javascript; charset=utf-8", APP_JS),
        "style.css" => answer("text/css; charset=utf-8", STYLE_CSS),
        _ => ApiError::not_found(format!("no dashboard file {name}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_its_files_from_ui_and_has_no_inline_script() {
        assert!(INDEX_HTML.contains(r#"src="/ui/app.js""#));
        assert!(INDEX_HTML.contains(r#"href="/ui/style.css""#));
        assert!(
            !INDEX_HTML.contains("<script>"),
            "CSP allows no inline script"
        );
        assert!(!INDEX_HTML.contains("style="), "CSP allows no inline style");
    }

    #[test]
    fn the_script_never_parses_html() {
        for bad in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!APP_JS.contains(bad), "app.js uses {bad}");
        }
    }
}
