//! The pages: how they are served, and what people do with them in a real
//! browser (Debian's chromium driven by `tests/browser/*.mjs`).

use std::path::Path;

use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem};

/// Runs `tests/browser/<scenario>.mjs` with `args` (plus the app's address
/// and the artifacts directory, `target/browser/`): its findings. A page's
/// console error, uncaught exception, failed request or 5xx answer fails it.
pub(crate) async fn browser(scenario: &str, app: &TestApp, mut args: Value) -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("tests/browser").join(format!("{scenario}.mjs"));
    assert!(
        root.join("tests/browser/node_modules/playwright-core")
            .is_dir(),
        "the browser tests need `npm ci --prefix tests/browser` and Debian's chromium (.ci/run installs both)"
    );
    args["base_url"] = json!(app.address);
    args["artifacts"] = json!(root.join("target/browser").to_string_lossy());
    let output = tokio::process::Command::new("node")
        .arg(&script)
        .env("BROWSER_ARGS", args.to_string())
        .output()
        .await
        .expect("node must be installed (.ci/run installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let findings: Value = stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| panic!("{scenario}: no findings\n{stdout}\n{stderr}"));
    assert!(
        output.status.success() && findings["ok"] == true,
        "{scenario}: {findings:#}\n{stderr}"
    );
    findings["result"].clone()
}

#[tokio::test]
async fn the_pages_are_served_with_a_policy_that_runs_only_their_own_files() {
    let db = crate::helpers::TestDb::new(crate::helpers::Kind::Sqlite).await;
    let app = TestApp::spawn(&db).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let root = client
        .get(format!("{}/", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(root.status().as_u16(), 302);
    assert_eq!(root.headers()["location"], "/admin");

    for (page, framed_by) in [
        ("/admin", "'none'"),
        ("/cabinet", "https://web.telegram.org"),
    ] {
        let response = app.get(page).await;
        assert_eq!(response.status().as_u16(), 200, "{page}");
        let csp = response.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(csp.contains("script-src 'self';"), "{page}: {csp}");
        assert!(!csp.contains("unsafe"), "{page}: {csp}");
        assert!(
            csp.ends_with(&format!("frame-ancestors {framed_by}")),
            "{page}: {csp}"
        );
        let html = response.text().await.unwrap();
        assert!(
            !html.contains("<script>"),
            "{page}: an inline script would not run"
        );
        // Every file the page links is served, with its type, cached for
        // good under its version.
        let linked: Vec<&str> = html
            .split(['"', '\''])
            .filter(|part| part.starts_with("/assets/"))
            .collect();
        assert!(linked.len() >= 3, "{page}: {linked:?}");
        for url in linked {
            let file = app.get(url).await;
            assert_eq!(file.status().as_u16(), 200, "{url}");
            let kind = file.headers()["content-type"].to_str().unwrap().to_owned();
            assert!(
                kind.starts_with("text/css") || kind.starts_with("text/javascript"),
                "{url}: {kind}"
            );
            assert!(
                file.headers()["cache-control"]
                    .to_str()
                    .unwrap()
                    .contains("immutable"),
                "{url}"
            );
            assert!(!file.text().await.unwrap().is_empty(), "{url}");
        }
    }
    let unversioned = app.get("/assets/admin.js").await;
    assert_eq!(unversioned.headers()["cache-control"], "no-cache");
    for missing in [
        "/assets/nothing.js",
        "/assets/..%2FCargo.toml",
        "/assets/%2e%2e%2fCargo.toml",
    ] {
        assert_problem(app.get(missing).await, 404, "not_found").await;
    }
    app.stop().await;
}
