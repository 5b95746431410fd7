//! The web monitor's page, embedded in the binary (so in the wheel): `index.html` served at
//! `/`, and the files it loads (the ES modules of its script, its style sheet) served by name
//! at `/assets/{file}` from one table, [`ASSETS`]. No library and no CDN: the page reads only
//! the JSON API of the master that serves it.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("assets/index.html");

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// The files served at `/assets/{file}`: (name, content type, content). `app.js` is the page's
/// entry module; it and the others import modules by relative path (`./dom.js` is
/// `/assets/dom.js`), so a new module is listed here too (a test checks every import).
const ASSETS: &[(&str, &str, &str)] = &[
    ("app.js", JAVASCRIPT, include_str!("assets/app.js")),
    ("format.js", JAVASCRIPT, include_str!("assets/format.js")),
    ("dom.js", JAVASCRIPT, include_str!("assets/dom.js")),
    ("routes.js", JAVASCRIPT, include_str!("assets/routes.js")),
    ("state.js", JAVASCRIPT, include_str!("assets/state.js")),
    ("api.js", JAVASCRIPT, include_str!("assets/api.js")),
    ("charts.js", JAVASCRIPT, include_str!("assets/charts.js")),
    ("overview.js", JAVASCRIPT, include_str!("assets/overview.js")),
    ("actors.js", JAVASCRIPT, include_str!("assets/actors.js")),
    ("actor.js", JAVASCRIPT, include_str!("assets/actor.js")),
    ("events.js", JAVASCRIPT, include_str!("assets/events.js")),
    ("app.css", CSS, include_str!("assets/app.css")),
];

/// The page runs only its own script and style, talks only to its own origin, and is never
/// framed by another site.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; \
     script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

pub fn index() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response()
}

/// `/assets/{file}`: the file of that name in [`ASSETS`]; 404 for any other name.
pub fn asset(file: &str) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some(&(_, content_type, body)) => {
            ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body)
                .into_response()
        }
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn header_of(response: &Response, name: header::HeaderName) -> &str {
        response.headers().get(name).map(|value| value.to_str().unwrap()).unwrap_or("")
    }

    /// The names `text` refers to after each `marker` up to the next quote: the modules an ES
    /// module imports (`from './dom.js'`), or the assets the page loads (`"/assets/app.css"`).
    fn references<'a>(text: &'a str, marker: &str) -> Vec<&'a str> {
        text.split(marker).skip(1).map(|rest| &rest[..rest.find(['\'', '"']).unwrap()]).collect()
    }

    #[test]
    fn every_asset_is_served_by_name_with_its_content_type() {
        for &(name, content_type, body) in ASSETS {
            let response = asset(name);
            assert_eq!(response.status(), StatusCode::OK, "{name}");
            assert_eq!(header_of(&response, header::CONTENT_TYPE), content_type, "{name}");
            assert_eq!(header_of(&response, header::CACHE_CONTROL), "no-cache", "{name}");
            assert!(!body.is_empty(), "{name}");
            let expected = if name.ends_with(".js") { JAVASCRIPT } else { CSS };
            assert_eq!(content_type, expected, "{name}");
        }
        assert_eq!(ASSETS.iter().map(|(name, _, _)| name).collect::<BTreeSet<_>>().len(), ASSETS.len());
    }

    #[test]
    fn any_other_name_is_not_found() {
        for name in ["", "index.html", "App.js", "app.js/", "../page.rs", "assets/app.js", "missing.js"] {
            assert_eq!(asset(name).status(), StatusCode::NOT_FOUND, "{name:?}");
        }
    }

    /// Every file the page loads is served, and every served file is loaded: the page's
    /// `/assets/` links and each module's imports reach exactly the table's names.
    #[test]
    fn the_page_and_its_modules_load_exactly_the_served_assets() {
        let served: BTreeSet<&str> = ASSETS.iter().map(|&(name, _, _)| name).collect();
        let mut loaded: BTreeSet<&str> = references(INDEX, "/assets/").into_iter().collect();
        assert_eq!(loaded, BTreeSet::from(["app.css", "app.js"]));
        assert!(INDEX.contains(r#"<script type="module" src="/assets/app.js"></script>"#));
        for &(name, _, body) in ASSETS.iter().filter(|(name, _, _)| name.ends_with(".js")) {
            for import in references(body, " from './") {
                assert!(served.contains(import), "{name} imports {import}, which is not served");
                loaded.insert(import);
            }
        }
        assert_eq!(loaded, served, "a served asset that nothing loads");
    }

    /// Every file in `assets/` is embedded (a module added to the folder and not to the table
    /// would be a 404 in the browser).
    #[test]
    fn every_file_of_the_assets_folder_is_in_the_table() {
        let folder = concat!(env!("CARGO_MANIFEST_DIR"), "/src/master/monitor/assets");
        let mut files: BTreeSet<String> = std::fs::read_dir(folder)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(files.remove("index.html"));
        let served: BTreeSet<String> = ASSETS.iter().map(|&(name, _, _)| name.to_string()).collect();
        assert_eq!(files, served);
    }
}
